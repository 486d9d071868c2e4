"""The ``alpacaeval`` evaluator's robust mode: tapir's lenient preference
judge (a judge plugin, default ``preference``), the order decided by a hash
of (seed, item id), one nudge when no verdict is found."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.plugins import registry
from tapir.progress import bar
from tapir.roles import GenerationRequest, JudgeRequest
from tapir.store import records

from tapir_alpacaeval.answers import Answers
from tapir_alpacaeval.data import InstructionSet
from tapir_alpacaeval.metrics import Annotation, discrete_win_rate, length_controlled, win_rate
from tapir_alpacaeval.options import Options, judge_backend_options, judge_model_of, robust_judge_args
from tapir_alpacaeval.reference_mode import warn_missing_logprobs
from tapir_alpacaeval.rows import TASK, Failures, failure_rows, per_dataset_rows, run_meta, task_name


def model_first(seed: int, item_id: str) -> bool:
    """Robust mode: whether the model's output is shown as A for this
    instruction: a stable coin from (seed, item id)."""
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


class _Watched:
    """A judge's backend that keeps each (request, reply) pair, so the run can
    tell whether the logprobs it asked for came back."""

    def __init__(self, backend):
        self.backend = backend
        self.model_id = backend.model_id
        self.replies: list[tuple[GenerationRequest, Any]] = []

    def generate(self, requests, on_result=None):
        out = self.backend.generate(requests, on_result=on_result)
        self.replies += list(zip(requests, out))
        return out

    def __getattr__(self, name):  # score(), tokenizer, ... pass through, as CachedBackend does
        return getattr(self.backend, name)


def judge_robust(o: Options, model: str, store, run_id: str, data: InstructionSet, answers: Answers, refs: dict,
                 gen_failures: Failures, *, refresh: bool) -> list[dict[str, Any]]:
    """tapir's judge plugin over every output not judged yet, the order from
    (seed, item id); the rows under ``alpaca_eval@robust``. ``refresh``: a
    forced run, past the LLM-call cache."""
    outputs = answers.outputs
    judge_model = judge_model_of(o)
    judge_args = robust_judge_args(o)
    judged = _judge(o, store, run_id, data.instructions, outputs, refs, judge_model, judge_args,
                    refresh=refresh)
    annotations = []
    failures = Failures(Counter(gen_failures.reasons), gen_failures.example)
    judge_failures = Failures()
    for ins in data.instructions:
        j = judged.get(ins.item_id)
        if j is None:
            continue
        position, stored = j
        pref = judge_preference(stored)
        if not stored.ok or pref is None:
            text = stored.error or "no preference"
            kind = text.split(":", 1)[0] if ":" in text else "no_verdict"
            judge_failures.add(ins.item_id, kind, text)
            failures.add(ins.item_id, kind, text)
            continue
        p = min(1.0, max(0.0, p_model(position, pref)))
        annotations.append(Annotation(ins.index, ins.instruction, ins.output, outputs[(ins.item_id, 0)][1],
                                      ins.generator, model, f"{o.judge}:{judge_model}", 1.0 + p))
    prefs = [a.preference - 1.0 for a in annotations]
    wr, se = win_rate(prefs)
    weighted = sum(1 for p in prefs if p not in (0.0, 0.5, 1.0))
    # read from the value: a logprob-weighted preference of exactly 0, 0.5 or 1 counts as text
    meta = run_meta(o, judge_model, data, answers, failures,
                      {"logprobs": weighted, "text": len(prefs) - weighted, "identical_outputs": 0})
    n = len(prefs)
    task = task_name(TASK, "robust")
    rows = [{"task": task, "metric": "win_rate", "value": wr, "stderr": se, "n": n,
             "meta": {**meta, "source": data.source, "instructions": len(data.instructions),
                      "judge_plugin": o.judge, "seed": o.seed, "max_new_tokens": o.max_new_tokens,
                      "weighted_preferences": weighted,
                      "reference_generators": sorted({i.generator for i in data.instructions})}}]
    lc = length_controlled(annotations, glm=o.lc_glm, standard=data.standard)
    rows.append({"task": task, "metric": "length_controlled_winrate", "value": lc.value, "stderr": lc.stderr,
                 "n": n, "meta": {**meta, "glm": lc.glm, **lc.extra, **({"note": lc.note} if lc.note else {})}})
    rows.append({"task": task, "metric": "discrete_win_rate", "value": discrete_win_rate(prefs), "stderr": None,
                 "n": n, "meta": {**meta, "primary": False}})
    lengths = [len(a.output_2) for a in annotations]
    rows.append({"task": task, "metric": "avg_length", "value": sum(lengths) / n if n else None, "stderr": None,
                 "n": n, "meta": {**meta, "unit": "characters", "primary": False}})
    rows += per_dataset_rows(data, annotations, "robust", meta)
    rows += failure_rows(meta, judge_failures, len(judged), gen_failures, len(data.instructions), "robust")
    return rows


def _judge(o: Options, store, run_id: str, instructions, outputs, refs, judge_model: str,
           judge_args: dict[str, Any], *, refresh: bool):
    """{item_id: (position, StoredJudgment)} for every instruction with an output."""
    stored = records.load_judgments(store, run_id, o.judge)
    todo = []
    for ins in instructions:
        if (ins.item_id, 0) not in outputs:
            continue
        position = "ba" if model_first(o.seed, ins.item_id) else "ab"
        have = stored.get((ins.item_id, position, 0))
        if have is not None and (have.ok or not o.retry_failed):
            continue
        model_out, ref_out = outputs[(ins.item_id, 0)], refs[(ins.item_id, 0)]
        a, b = (model_out, ref_out) if position == "ba" else (ref_out, model_out)
        todo.append((ins, position, a[0], b[0],
                     JudgeRequest(question=ins.instruction, answer_a=a[1], answer_b=b[1], item_id=ins.item_id)))
    if todo:
        backend = load_cached(judge_model, store, run_id, options=judge_backend_options(o),
                              refresh=refresh)
        backend.tags["role"] = "judge"  # the judge plugin's requests carry no meta (so no item either)
        watched = _Watched(backend)
        judge = registry().get("judges", o.judge).create(watched, options=judge_args)
        with bar(f"alpacaeval: judging ({judge_model}, robust)", len(todo)) as b:
            judgments = []
            for start in range(0, len(todo), 64):  # chunks, so the bar moves on a long run
                chunk = todo[start:start + 64]
                judgments += judge.judge([t[-1] for t in chunk])
                b.update(len(chunk))
        asked = [c for r, c in watched.replies if r.params.top_logprobs]
        if asked:
            warn_missing_logprobs(judge_model, asked, max(r.params.top_logprobs for r, _ in watched.replies),
                                  f"the {o.judge} judge read those verdicts from the text")
        if len(judgments) != len(todo):
            raise TapirError(f"the judge returned {len(judgments)} judgments for {len(todo)} requests")
        records.save_judgments(store, run_id, o.judge, judge_model, judge.kind, [
            records.JudgmentRow(ins.item_id, position, 0, j, a_id, b_id)
            for (ins, position, a_id, b_id, _), j in zip(todo, judgments)
        ])
        stored = records.load_judgments(store, run_id, o.judge)
    out = {}
    for ins in instructions:
        position = "ba" if model_first(o.seed, ins.item_id) else "ab"
        if (ins.item_id, position, 0) in stored:
            out[ins.item_id] = (position, stored[(ins.item_id, position, 0)])
    return out
