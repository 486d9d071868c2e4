"""What both judging modes of the ``alpacaeval`` evaluator report in: the
failures counted with their reasons, the row meta every row carries, the
per-dataset and failure rows, and the task names (robust rows carry their
mode, so they never replace reference rows)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tapir_alpacaeval.answers import Answers
from tapir_alpacaeval.data import InstructionSet
from tapir_alpacaeval.metrics import win_rate

TASK = "alpaca_eval"
NAN = float("nan")


def task_name(base: str, mode: str) -> str:
    """Robust rows carry their mode in the task, so a robust run never
    replaces (or is read as) a reference row."""
    return base if mode == "reference" else f"{base}@{mode}"


@dataclass
class Failures:
    """Items that could not be scored, with why."""

    reasons: Counter = field(default_factory=Counter)
    example: str | None = None

    def add(self, item_id: str, kind: str, text: str) -> None:
        self.reasons[kind] += 1
        if self.example is None:
            self.example = f"{item_id}: {text}"[:500]

    @property
    def count(self) -> int:
        return sum(self.reasons.values())


def run_meta(o, judge_model: str, data: InstructionSet, answers: Answers, failures: Failures,
          read: dict[str, int]) -> dict[str, Any]:
    """What every row of the run carries: the row contract (tapir.bench.META_KEYS), which
    instructions (a subset says how many of the set, and their digest), how the model was
    prompted (``template``) and where its outputs came from, how the judgments were read."""
    return {"judge": judge_model, "judge_mode": o.judge_mode, "failures": failures.count,
            "failure_reasons": dict(failures.reasons), "failure_example": failures.example,
            "data_version": data.version, "subset": data.subset, **data.provenance,
            "template": answers.producer.template.label if answers.producer else None,
            "outputs": answers.describe(), "read": read}


def per_dataset_rows(data, annotations, mode, meta) -> list[dict[str, Any]]:
    dataset_of = {i.index: i.dataset for i in data.instructions}
    by_dataset = defaultdict(list)
    for a in annotations:
        if a.preference == a.preference:
            by_dataset[dataset_of[a.index]].append(a.preference - 1.0)
    if len(by_dataset) < 2:
        return []
    rows = []
    for name in sorted(by_dataset):
        value, stderr = win_rate(by_dataset[name])
        rows.append({"task": task_name(f"dataset/{name}", mode), "metric": "win_rate", "value": value,
                     "stderr": stderr, "n": len(by_dataset[name]), "meta": {**meta, "primary": False}})
    return rows


def failure_rows(meta, judge_failures, judged, gen_failures, total, mode) -> list[dict[str, Any]]:
    return [
        {"task": task_name("judge", mode), "metric": "failures", "value": float(judge_failures.count),
         "stderr": None, "n": judged,
         "meta": {**meta, "failures": judge_failures.count, "failure_reasons": dict(judge_failures.reasons),
                  "failure_example": judge_failures.example, "excluded": judge_failures.count}},
        {"task": task_name("generation", mode), "metric": "failures", "value": float(gen_failures.count),
         "stderr": None, "n": total,
         "meta": {**meta, "failures": gen_failures.count, "failure_reasons": dict(gen_failures.reasons),
                  "failure_example": gen_failures.example}},
    ]
