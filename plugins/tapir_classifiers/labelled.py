"""Labelled instructions: loading, stratified splits and held-out evaluation.

A labelled file is JSONL (or a JSON list) of objects with ``instruction``,
optional ``input`` and ``task_type`` (``label`` is accepted too). The text a
classifier sees is the instruction, then a blank line and the input when
there is one: the same text as :attr:`tapir.roles.Item.prompt`.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.jsonl import read_jsonl
from tapir.tasks import TASK_TYPES

SEED_FILE = "seed_instructions.jsonl"


@dataclass(frozen=True)
class Example:
    """One labelled instruction."""

    id: str
    instruction: str
    input: str
    label: str

    @property
    def text(self) -> str:
        return example_text(self.instruction, self.input)


def example_text(instruction: str, input: str = "") -> str:
    """The text a classifier sees (same as ``Item.prompt``)."""
    return f"{instruction}\n\n{input}" if input else instruction


def default_labels_path() -> Path:
    """The labelled seed set shipped with tapir (``data/seed_instructions.jsonl``)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "data" / SEED_FILE, Path.cwd() / "data" / SEED_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise TapirError(
        f"no labelled instructions given and the shipped seed set ({candidates[0]}) is missing; "
        "pass labels_path=FILE (JSONL with instruction, input, task_type)"
    )


def canonical_label(value: str, labels: Sequence[str] = TASK_TYPES) -> str | None:
    """``value`` as one of ``labels`` ignoring case, spaces, '-' and '_'; else None."""
    key = _squash(value)
    for label in labels:
        if _squash(label) == key:
            return label
    return None


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def load_labelled(path: str | Path | None = None, labels: Sequence[str] = TASK_TYPES) -> list[Example]:
    """Read labelled instructions; raise :class:`TapirError` naming the bad line."""
    file = Path(path) if path is not None else default_labels_path()
    if not file.is_file():
        raise TapirError(f"labelled file not found: {file}")
    rows = _read_rows(file)
    out: list[Example] = []
    for lineno, row in rows:
        where = f"{file}:{lineno}"
        if not isinstance(row, dict):
            raise TapirError(f"{where}: expected a JSON object, got {type(row).__name__}")
        instruction = str(row.get("instruction") or "").strip()
        raw_label = row.get("task_type", row.get("label"))
        if not instruction:
            raise TapirError(f"{where}: missing 'instruction'")
        if not raw_label:
            raise TapirError(f"{where}: missing 'task_type'")
        label = canonical_label(str(raw_label), labels)
        if label is None:
            raise TapirError(f"{where}: unknown task type {raw_label!r}. Allowed: {', '.join(labels)}")
        out.append(Example(str(row.get("id") or f"line-{lineno}"), instruction, str(row.get("input") or ""), label))
    if not out:
        raise TapirError(f"{file}: no labelled instructions")
    return out


def _read_rows(file: Path) -> list[tuple[int, Any]]:
    if file.suffix == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TapirError(f"{file}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise TapirError(f"{file}: expected a JSON list of objects")
        return [(i + 1, row) for i, row in enumerate(data)]
    return read_jsonl(file)


def stratified_split(
    examples: Sequence[Example], holdout: float = 0.2, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, held-out): ``holdout`` of each label held out (at least one
    when a label has two or more examples), shuffled with ``seed``."""
    if not 0.0 <= holdout < 1.0:
        raise TapirError(f"holdout must be in [0, 1), got {holdout}")
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    train: list[Example] = []
    test: list[Example] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_test = round(len(group) * holdout)
        if holdout > 0 and n_test == 0 and len(group) >= 2:
            n_test = 1
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def kfold(examples: Sequence[Example], k: int = 5, seed: int = 0) -> list[tuple[list[Example], list[Example]]]:
    """Stratified k folds: each example is held out exactly once."""
    if k < 2:
        raise TapirError(f"k must be >= 2, got {k}")
    rng = random.Random(seed)
    folds: list[list[Example]] = [[] for _ in range(k)]
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    offset = 0
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        for i, ex in enumerate(group):
            folds[(i + offset) % k].append(ex)
        offset += len(group)
    return [([ex for j, f in enumerate(folds) if j != i for ex in f], folds[i]) for i in range(k)]


def evaluate(classifier: Any, examples: Sequence[Example]) -> dict[str, Any]:
    """Accuracy of ``classifier`` on ``examples``.

    Returns ``{"accuracy", "n", "correct", "per_label": {label: {"n",
    "correct", "accuracy"}}, "confusions": [[gold, predicted, count], ...]}``
    (confusions: the most frequent mistakes first).
    """
    if not examples:
        raise TapirError("no examples to evaluate on")
    predictions = classifier.classify([ex.text for ex in examples])
    per_label: dict[str, dict[str, Any]] = {}
    mistakes: Counter[tuple[str, str]] = Counter()
    correct = 0
    for ex, (predicted, _conf) in zip(examples, predictions):
        row = per_label.setdefault(ex.label, {"n": 0, "correct": 0})
        row["n"] += 1
        if predicted == ex.label:
            row["correct"] += 1
            correct += 1
        else:
            mistakes[(ex.label, predicted)] += 1
    for row in per_label.values():
        row["accuracy"] = row["correct"] / row["n"]
    ordered = {label: per_label[label] for label in sorted(per_label, key=_label_order)}
    return {
        "accuracy": correct / len(examples),
        "n": len(examples),
        "correct": correct,
        "per_label": ordered,
        "confusions": [[g, p, c] for (g, p), c in mistakes.most_common()],
    }


def _label_order(label: str) -> tuple[int, str]:
    return (TASK_TYPES.index(label) if label in TASK_TYPES else len(TASK_TYPES), label)


def present_labels(examples: Sequence[Example]) -> list[str]:
    """The labels that occur in ``examples``, in TASK_TYPES order."""
    return sorted({ex.label for ex in examples}, key=_label_order)
