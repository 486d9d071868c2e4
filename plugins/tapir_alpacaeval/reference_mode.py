"""The ``alpacaeval`` evaluator's reference mode: alpaca_eval 0.6.6's own
annotator (prompt, parameters, seeded order swap, logprob parser, unswap;
tapir_alpacaeval.annotator) and its metrics (win rate, LC win rate)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from tapir.models import load_cached
from tapir.progress import bar
from tapir.roles import GenerationRequest, Judgment
from tapir.store import records

from tapir_alpacaeval.answers import Answers
from tapir_alpacaeval.data import InstructionSet
from tapir_alpacaeval.metrics import Annotation, length_controlled, reference_winrate
from tapir_alpacaeval.options import Options, judge_backend_options, judge_model_of
from tapir_alpacaeval.rows import NAN, TASK, Failures, failure_rows, per_dataset_rows, run_meta

log = logging.getLogger("tapir.alpacaeval")


def judge_reference(o: Options, model: str, store, run_id: str, data: InstructionSet, answers: Answers, refs: dict,
                    gen_failures: Failures, annotator, *, refresh: bool) -> list[dict[str, Any]]:
    """alpaca_eval's annotator over every output not judged yet; its win rates,
    LC win rate, lengths, per-dataset and failure rows. ``refresh``: a
    forced run, past the LLM-call cache."""
    from tapir_alpacaeval.annotator import Pair

    judge_name = f"alpaca_eval:{annotator.name}"
    judge_model = judge_model_of(o, annotator)
    outputs = answers.outputs
    have_output = [i for i in data.instructions if (i.item_id, 0) in outputs]
    # each output as alpaca_eval reads it from an outputs file: as generated, whitespace
    # included (only its evaluate_from_model strips), in the prompt and in the lengths
    texts = {i.item_id: outputs[(i.item_id, 0)][1] for i in have_output}
    plan = annotator.plan([Pair(i.item_id, i.instruction, i.output, texts[i.item_id]) for i in have_output])
    by_id = {i.item_id: i for i in have_output}
    stored = records.load_judgments(store, run_id, judge_name)
    todo, identical = [], []
    for p in plan:
        position = "ba" if p.swapped else "ab"
        have = stored.get((p.key, position, 0))
        if have is not None and (have.ok or not o.retry_failed):
            continue
        (identical if p.messages is None else todo).append((p, position))
    rows = []
    for p, position in identical:  # alpaca_eval: 1.5 without asking
        rows.append(_row(p.key, position, Judgment(preference=0.5, details={"identical_outputs": True}),
                              outputs, refs))
    if todo:
        backend = load_cached(judge_model, store, run_id, options=judge_backend_options(o, annotator),
                              refresh=refresh)
        params = annotator.params()
        requests = [GenerationRequest(p.messages, params, meta={"role": "judge", "item_id": p.key})
                    for p, _ in todo]
        with bar(f"alpacaeval: judging ({judge_model})", len(requests)) as b:
            completions = backend.generate(requests, on_result=lambda i, c: b.update())
        if params.top_logprobs:
            warn_missing_logprobs(judge_model, completions, params.top_logprobs,
                                  "alpaca_eval's parser reads only logprobs, so those judgments failed "
                                  "(no_logprobs)")
        for (p, position), c in zip(todo, completions):
            verdict = annotator.parse(c)
            j = Judgment(
                preference=None if verdict.shown is None else verdict.shown - 1.0,
                raw=[c.text] if c.error is None else [], error=verdict.reason,
                details={"swapped": p.swapped, "kind": verdict.kind},
            )
            rows.append(_row(p.key, position, j, outputs, refs))
    if rows:
        records.save_judgments(store, run_id, judge_name, judge_model, "preference", rows)
        stored = records.load_judgments(store, run_id, judge_name)

    failures = Failures(Counter(gen_failures.reasons), gen_failures.example)
    judge_failures = Failures()
    shown, read = [], Counter()
    for p in plan:
        position = "ba" if p.swapped else "ab"
        j = stored.get((p.key, position, 0))
        if j is None or not j.ok or j.preference is None:
            text = (j.error if j is not None else None) or "not judged"
            kind = text.split(":", 1)[0] if ":" in text else "no_verdict"
            judge_failures.add(p.key, kind, text)
            failures.add(p.key, kind, text)
            continue
        shown.append((p.key, p.swapped, 1.0 + j.preference))
        read["identical_outputs" if p.messages is None else "logprobs"] += 1
    final = annotator.unswap(shown)
    annotations = [
        Annotation(by_id[p.key].index, by_id[p.key].instruction, by_id[p.key].output, texts[p.key],
                   by_id[p.key].generator, model, annotator.name, final.get(p.key, NAN))
        for p in plan
    ]
    meta = run_meta(o, judge_model, data, answers, failures, {"logprobs": read["logprobs"], "text": 0,
                                                                "identical_outputs": read["identical_outputs"]})
    if not [a for a in annotations if a.preference == a.preference]:
        wr = {"win_rate": None, "standard_error": None, "discrete_win_rate": None, "n_total": 0}
    else:
        wr = reference_winrate(annotations)
    n = int(wr.get("n_total") or 0)
    rows_out = [{"task": TASK, "metric": "win_rate", "value": wr["win_rate"], "stderr": wr["standard_error"],
                 "n": n, "meta": {**meta, "source": data.source, "instructions": len(data.instructions),
                                  "reference": annotator.describe(), "max_new_tokens": o.max_new_tokens,
                                  "swapped": sum(1 for p in plan if p.swapped),
                                  "reference_generators": sorted({i.generator for i in data.instructions})}}]
    lc = length_controlled(annotations, glm=o.lc_glm, standard=data.standard)
    rows_out.append({"task": TASK, "metric": "length_controlled_winrate", "value": lc.value,
                     "stderr": lc.stderr, "n": n,
                     "meta": {**meta, "glm": lc.glm, **lc.extra, **({"note": lc.note} if lc.note else {})}})
    rows_out.append({"task": TASK, "metric": "discrete_win_rate", "value": wr["discrete_win_rate"],
                     "stderr": None, "n": n, "meta": {**meta, "primary": False}})
    lengths = [len(texts[i.item_id]) for i in have_output]
    rows_out.append({"task": TASK, "metric": "avg_length", "value": sum(lengths) / len(lengths) if lengths else None,
                     "stderr": None, "n": len(lengths),
                     "meta": {**meta, "unit": "characters (outputs as generated)", "primary": False}})
    rows_out += per_dataset_rows(data, annotations, "reference", meta)
    rows_out += failure_rows(meta, judge_failures, len(plan), gen_failures, len(data.instructions),
                                   "reference")
    return rows_out


def _row(item_id, position, judgment, outputs, refs) -> records.JudgmentRow:
    model_out, ref_out = outputs[(item_id, 0)], refs[(item_id, 0)]
    a, b = (model_out, ref_out) if position == "ba" else (ref_out, model_out)
    return records.JudgmentRow(item_id, position, 0, judgment, a[0], b[0])


def warn_missing_logprobs(judge_model: str, completions: list, asked: int, consequence: str) -> int:
    """Warn once when a judge asked for logprobs answered without them; returns how many."""
    answered = [c for c in completions if c.error is None]
    missing = sum(1 for c in answered if not c.logprobs)
    if missing:
        log.warning(f"alpacaeval: the judge {judge_model} was asked for logprobs (top_logprobs={asked}) and "
                    f"returned none in {missing} of {len(answered)} replies; {consequence}. Does its server "
                    f"return logprobs (OpenAI-compatible servers may ignore the logprobs parameter)?")
    return missing
