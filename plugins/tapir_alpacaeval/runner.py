"""The ``alpacaeval`` evaluator: the model's outputs against reference
outputs, judged by a preference judge, as AlpacaEval 2.0's weighted win
rate and length-controlled win rate.

For each instruction the model answers greedily; the judge (default
``preference``) sees the instruction and the two outputs, in an order
decided per instruction by a hash of (seed, item id), so a re-run shows
the judge the same prompt and the positions are balanced. The judge's
P(B better) is mapped back to P(model better). Logprob-weighted
preferences are used as they are; a judge without logprobs gives 1, 0 or
0.5.

Stored under the run id: items ``alpaca-<index>`` (with the reference
output), responses (role ``reference``, model = the reference generator;
role ``answer``, model = the model id; round 0), judgments (position
``ab``: reference shown as A, model as B; ``ba``: swapped; ``preference``
holds the judge's P(B better) as returned).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.plugins import registry
from tapir.roles import GenerationParams, GenerationRequest, JudgeRequest

from tapir_alpacaeval.data import DEFAULT_CONFIG, Instruction, InstructionSet, load_instructions
from tapir_alpacaeval.metrics import Annotation, discrete_win_rate, length_controlled, win_rate
from tapir.store import records
from tapir_mtbench.options import as_bool, as_dict, as_int, check_known

OPTIONS = {
    "data_path": "local JSON/JSONL with instruction, output (reference), generator, dataset; default: the hub",
    "hub_config": f"config of tatsu-lab/alpaca_eval on the hub (default {DEFAULT_CONFIG})",
    "limit": "only the first N instructions",
    "judge": "judge plugin (default preference)",
    "judge_model": "model id of the judge (default openai/gpt-4-1106-preview, AlpacaEval 2.0's annotator)",
    "judge_options": "backend options of the judge model, e.g. {\"api_base\": ...}",
    "judge_args": "options of the judge plugin itself, e.g. {\"top_logprobs\": 5}",
    "seed": "seed of the per-instruction order randomisation (default 0)",
    "max_new_tokens": "output length limit of the model (default 1024)",
    "system_prompt": "system message for the model (default none)",
    "model_options": "backend options of the model, e.g. {\"batch_size\": 8}",
    "lc_glm": "auto (default), length_controlled_v1 or length_controlled_minimal",
    "retry_failed": "judge again the instructions whose judgment failed (default false)",
}

DEFAULT_JUDGE_MODEL = "openai/gpt-4-1106-preview"
TASK = "alpaca_eval"
ANSWER, REFERENCE = "answer", "reference"


@dataclass
class Settings:
    data_path: str | None
    hub_config: str
    limit: int | None
    judge: str
    judge_model: str
    judge_options: dict[str, Any]
    judge_args: dict[str, Any]
    seed: int
    max_new_tokens: int
    system_prompt: str | None
    model_options: dict[str, Any]
    lc_glm: str
    retry_failed: bool

    @classmethod
    def parse(cls, options: dict[str, Any]) -> "Settings":
        check_known("alpacaeval", options, OPTIONS)
        o = options
        judge = str(o.get("judge") or "preference")
        judge_args = as_dict("judge_args", o.get("judge_args"))
        if judge == "preference":
            judge_args.setdefault("order", "fixed")  # this runner randomises the order itself
        return cls(
            data_path=o.get("data_path") or None,
            hub_config=str(o.get("hub_config") or DEFAULT_CONFIG),
            limit=as_int("limit", o["limit"]) if o.get("limit") not in (None, "") else None,
            judge=judge,
            judge_model=str(o.get("judge_model") or DEFAULT_JUDGE_MODEL),
            judge_options=as_dict("judge_options", o.get("judge_options")),
            judge_args=judge_args,
            seed=as_int("seed", o.get("seed", 0)),
            max_new_tokens=as_int("max_new_tokens", o.get("max_new_tokens", 1024)),
            system_prompt=o.get("system_prompt") or None,
            model_options=as_dict("model_options", o.get("model_options")),
            lc_glm=str(o.get("lc_glm") or "auto"),
            retry_failed=as_bool("retry_failed", o.get("retry_failed", False)),
        )


def model_first(seed: int, item_id: str) -> bool:
    """Whether the model's output is shown as A for this instruction: a
    stable coin from (seed, item id)."""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[0] & 1 == 1


def p_model(position: str, preference: float) -> float:
    """P(model better) from the judge's P(B better) at a position."""
    return 1.0 - preference if position == "ba" else preference


def judge_preference(j: records.StoredJudgment) -> float | None:
    """The judge's P(B better): its preference, or, for a judge that scores
    both outputs (such as ``pairwise``), 1 / 0 / 0.5 from the two scores."""
    if j.preference is not None:
        return j.preference
    if j.score_a is not None and j.score_b is not None:
        return 1.0 if j.score_b > j.score_a else 0.0 if j.score_b < j.score_a else 0.5
    return None


class AlpacaEval:
    """AlpacaEval 2.0 evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md for the options)."""

    name = "alpacaeval"

    def __init__(self, **options: Any):
        self.options = options
        Settings.parse(options)

    def run(self, model: str, store, *, run_id: str, **options: Any) -> list[dict[str, Any]]:
        s = Settings.parse({**self.options, **options})
        data = load_instructions(s.data_path, hub_config=s.hub_config, limit=s.limit)
        self._save_items(store, run_id, data)
        outputs, gen_failures = self._generate(model, store, run_id, data.instructions, s)
        refs = {}
        for gen in {i.generator for i in data.instructions}:
            refs.update(records.load_responses(store, run_id, REFERENCE, gen))
        judged = self._judge(store, run_id, data.instructions, outputs, refs, s)

        annotations, failures, by_dataset = [], 0, defaultdict(list)
        for ins in data.instructions:
            j = judged.get(ins.item_id)
            if j is None:
                continue
            position, stored = j
            pref = judge_preference(stored)
            if not stored.ok or pref is None:
                failures += 1
                continue
            p = min(1.0, max(0.0, p_model(position, pref)))
            by_dataset[ins.dataset].append(p)
            annotations.append(Annotation(ins.index, ins.instruction, ins.output, outputs[(ins.item_id, 0)][1],
                                          ins.generator, model, f"{s.judge}:{s.judge_model}", 1.0 + p))
        prefs = [a.preference - 1.0 for a in annotations]
        wr, se = win_rate(prefs)
        weighted = sum(1 for p in prefs if p not in (0.0, 0.5, 1.0))
        meta = {"source": data.source, "instructions": len(data.instructions), "judge": s.judge,
                "judge_model": s.judge_model, "seed": s.seed, "max_new_tokens": s.max_new_tokens,
                "weighted_preferences": weighted, "reference_generators": sorted({i.generator for i in data.instructions})}
        n = len(prefs)
        rows = [{"task": TASK, "metric": "win_rate", "value": wr, "stderr": se, "n": n, "meta": meta}]
        lc = length_controlled(annotations, glm=s.lc_glm, standard=data.standard)
        lc_meta = {"glm": lc.glm, **({"note": lc.note} if lc.note else {})}
        rows.append({"task": TASK, "metric": "length_controlled_winrate", "value": lc.value, "stderr": lc.stderr,
                     "n": n, "meta": lc_meta})
        rows.append({"task": TASK, "metric": "discrete_win_rate", "value": discrete_win_rate(prefs), "stderr": None,
                     "n": n, "meta": {"primary": False}})
        lengths = [len(a.output_2) for a in annotations]
        rows.append({"task": TASK, "metric": "avg_length", "value": sum(lengths) / n if n else None, "stderr": None,
                     "n": n, "meta": {"unit": "characters", "primary": False}})
        if len(by_dataset) > 1:
            for name in sorted(by_dataset):
                value, stderr = win_rate(by_dataset[name])
                rows.append({"task": f"dataset/{name}", "metric": "win_rate", "value": value, "stderr": stderr,
                             "n": len(by_dataset[name]), "meta": {"primary": False}})
        rows.append({"task": "judge", "metric": "failures", "value": float(failures), "stderr": None,
                     "n": len(judged), "meta": {"excluded": failures}})
        rows.append({"task": "generation", "metric": "failures", "value": float(gen_failures), "stderr": None,
                     "n": len(data.instructions), "meta": {}})
        return rows

    # -- steps ------------------------------------------------------------

    @staticmethod
    def _save_items(store, run_id: str, data: InstructionSet) -> None:
        records.save_items(store, run_id, [
            {"id": i.item_id, "instruction": i.instruction, "output": i.output, "task_type": None,
             "meta": {"index": i.index, "generator": i.generator, "dataset": i.dataset}}
            for i in data.instructions
        ])
        by_generator = defaultdict(list)
        for i in data.instructions:
            by_generator[i.generator].append((i.item_id, 0, i.output, None))
        for generator, rows in by_generator.items():
            records.save_responses(store, run_id, REFERENCE, generator, rows)

    @staticmethod
    def _generate(model: str, store, run_id: str, instructions: list[Instruction], s: Settings):
        """The model's outputs (greedy), generated in one batch for those
        not stored yet. Returns ({(item_id, 0): (response id, text)}, failures)."""
        stored = records.load_responses(store, run_id, ANSWER, model)
        todo = [i for i in instructions if (i.item_id, 0) not in stored]
        if todo:
            backend = load_cached(model, store, run_id, options=s.model_options or None)
            params = GenerationParams(max_new_tokens=s.max_new_tokens, temperature=0.0)
            system = [{"role": "system", "content": s.system_prompt}] if s.system_prompt else []
            requests = [GenerationRequest([*system, {"role": "user", "content": i.instruction}], params) for i in todo]
            completions = backend.generate(requests)
            records.save_responses(store, run_id, ANSWER, model, [
                (i.item_id, 0, c.text, c.call_id) for i, c in zip(todo, completions) if c.error is None
            ])
            stored = records.load_responses(store, run_id, ANSWER, model)
        failures = sum(1 for i in instructions if (i.item_id, 0) not in stored)
        return stored, failures

    def _judge(self, store, run_id: str, instructions: list[Instruction], outputs: dict, refs: dict, s: Settings):
        """{item_id: (position, StoredJudgment)} for every instruction with an output."""
        stored = records.load_judgments(store, run_id, s.judge)
        todo = []
        for ins in instructions:
            if (ins.item_id, 0) not in outputs:
                continue
            position = "ba" if model_first(s.seed, ins.item_id) else "ab"
            have = stored.get((ins.item_id, position, 0))
            if have is not None and (have.ok or not s.retry_failed):
                continue
            model_out, ref_out = outputs[(ins.item_id, 0)], refs[(ins.item_id, 0)]
            a, b = (model_out, ref_out) if position == "ba" else (ref_out, model_out)
            todo.append((ins, position, a[0], b[0],
                         JudgeRequest(question=ins.instruction, answer_a=a[1], answer_b=b[1], item_id=ins.item_id)))
        if todo:
            backend = load_cached(s.judge_model, store, run_id, options=s.judge_options or None)
            judge = registry().get("judges", s.judge).create(backend, options=s.judge_args)
            judgments = judge.judge([t[-1] for t in todo])
            if len(judgments) != len(todo):
                raise TapirError(f"the judge returned {len(judgments)} judgments for {len(todo)} requests")
            records.save_judgments(store, run_id, s.judge, s.judge_model, getattr(judge, "kind", "preference"), [
                records.JudgmentRow(ins.item_id, position, 0, j, a_id, b_id)
                for (ins, position, a_id, b_id, _), j in zip(todo, judgments)
            ])
            stored = records.load_judgments(store, run_id, s.judge)
        out = {}
        for ins in instructions:
            position = "ba" if model_first(s.seed, ins.item_id) else "ab"
            if (ins.item_id, position, 0) in stored:
                out[ins.item_id] = (position, stored[(ins.item_id, position, 0)])
        return out
