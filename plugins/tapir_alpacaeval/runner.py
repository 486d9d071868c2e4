"""The ``alpacaeval`` evaluator: the model's outputs against reference
outputs, judged pairwise, as AlpacaEval 2.0's weighted win rate and
length-controlled (LC) win rate.

For each instruction the model answers greedily (``max_new_tokens``, an
optional system prompt) in the format it was trained on: a local
checkpoint through its tokenizer's chat template, as the trainer renders
its examples (tapir_alpacaeval.answers, which also says how the outputs
are stored and reused). Then, by ``judge_mode``:

``reference`` (default)
    alpaca_eval 0.6.6's own annotator (``annotator``, default
    ``weighted_alpaca_eval_gpt4_turbo``) read from the installed package
    (tapir_alpacaeval.annotator): its prompt template, request parameters,
    seeded order swap, logprob parser and unswap; each output is judged and
    measured exactly as generated, as alpaca_eval reads it from an outputs
    file (no stripping: whitespace around an output, or an output of
    whitespace only, is sent and counted as it is); two identical outputs
    count 1.5 without a request; no re-ask. Win rate, standard error and
    discrete win rate come from ``alpaca_eval.metrics.get_winrate``, the LC
    win rate from its ``get_length_controlled_winrate``
    (tapir_alpacaeval.metrics says which GLM when). Rows: task
    ``alpaca_eval``.
``robust``
    tapir's lenient variant: its own preference prompt (A/B verdict, greedy,
    plugins/tapir_judges/prompts.py) through a judge plugin (default
    ``preference``), the order decided by a hash of (seed, item id), one
    nudge when no verdict is found, a leading-space verdict token accepted.
    Rows: task ``alpaca_eval@robust`` (and ``dataset/<name>@robust``), so
    they never replace or mix with reference rows.

Every row's ``meta`` holds ``judge``, ``judge_mode``, ``failures``,
``failure_reasons``, ``failure_example``, ``data_version`` and ``subset``
(None for the whole set, else ``<n> of <total> (<selection>)
sha256:<digest>``), ``instructions``, ``set_size``, ``full_benchmark``,
``instructions_digest``, ``template`` (how the model's prompt was
rendered), ``outputs`` (their producer key, and how many were generated,
answered from the LLM-call cache or copied from another run) and ``read``
(how the judgments were read: ``logprobs``, ``text``,
``identical_outputs``; in robust mode inferred from the value, so a
weighted preference of exactly 0, 0.5 or 1 counts as text). A judge asked
for logprobs that answers without them is warned about once per run.
A failed answer or judgment (API error, no verdict) is counted with its
reason, never used as a result, and asked again on a re-run
(``retry_failed``, default true; a reply the cache holds is re-parsed, not
re-bought).

Stored under the run id: items ``alpaca-<index>`` (with the reference
output), responses (role ``reference``, model = the reference generator;
role ``answer``, model = the outputs' producer key; round 0), judgments
(judge ``alpaca_eval:<annotator>`` in reference mode, the judge plugin's
name in robust mode; position ``ab``: reference shown first, ``ba``: the
model's output first; ``preference``: P(the output shown second is better)
as the judge gave it). LLM calls carry their role (``answer``, ``judge``)
and, but for the robust judge plugin's, their item id.

This module is the orchestration (data, answers, which mode); the options
are :mod:`tapir_alpacaeval.options`, the judging modes
:mod:`tapir_alpacaeval.reference_mode` and :mod:`tapir_alpacaeval.robust_mode`,
the rows both report in :mod:`tapir_alpacaeval.rows`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tapir.errors import TapirError
from tapir.plugins import registry
from tapir.store import records

from tapir_alpacaeval.answers import answer_template, generate_answers
from tapir_alpacaeval.data import InstructionSet, load_instructions
from tapir_alpacaeval.options import (Options, annotator_of, judge_backend_options, judge_model_of,
                                      robust_judge_args)
from tapir_alpacaeval.reference_mode import judge_reference
from tapir_alpacaeval.robust_mode import judge_robust
from tapir_alpacaeval.rows import Failures

REFERENCE = "reference"  # the role of the reference outputs' responses


class AlpacaEval:
    """AlpacaEval 2.0 evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md)."""

    name = "alpacaeval"

    Options = Options

    def __init__(self, options: "AlpacaEval.Options | None" = None):
        self.options = options if options is not None else self.Options()

    # -- checks before anything is written ---------------------------------------

    def preflight(self, model: str) -> list[str]:
        """Problems found without generating anything: the data, alpaca_eval
        and its annotator (reference mode), the judge plugin's options
        (robust mode), the model ids and their credentials."""
        o = self.options
        problems = []
        annotator = None
        try:
            load_instructions(o.data_path, hub_config=o.hub_config, limit=o.limit, instruction_ids=o.instruction_ids)
        except TapirError as exc:
            problems.append(str(exc))
        if o.judge_mode == "reference":
            try:
                annotator = annotator_of(o)
            except TapirError as exc:
                problems.append(str(exc))
        else:
            try:
                problems += registry().get("judges", o.judge).check_options(
                    robust_judge_args(o), f"alpacaeval judge_args ({o.judge})")
            except TapirError as exc:
                problems.append(str(exc))
        from tapir.bench import model_problems

        model_found = model_problems(model, o.model_options, what="model")
        problems += model_found
        if not model_found:
            try:  # a local model's tokenizer tells its chat template, part of the outputs' key
                answer_template(model, o.model_options)
            except TapirError as exc:
                problems.append(str(exc))
        if o.judge_mode == "robust" or annotator is not None:
            problems += model_problems(judge_model_of(o, annotator), judge_backend_options(o, annotator) or {},
                                       what="judge model")
        return problems

    # -- the run ----------------------------------------------------------------

    def run(self, model: str, store, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        """Answer, judge and score; ``force`` bypasses the LLM-call cache."""
        o = self.options
        annotator = annotator_of(o) if o.judge_mode == "reference" else None  # fails before any write
        data = load_instructions(o.data_path, hub_config=o.hub_config, limit=o.limit,
                                 instruction_ids=o.instruction_ids)
        save_items(store, run_id, data)
        answers = generate_answers(model, store, run_id, data.instructions, data_version=data.version,
                                   max_new_tokens=o.max_new_tokens, system_prompt=o.system_prompt,
                                   model_options=o.model_options, refresh=force)
        gen_failures = Failures()
        for item_id, error in answers.failures:
            gen_failures.add(item_id, "generation", f"generation: {error}")
        refs = {}
        for gen in {i.generator for i in data.instructions}:
            refs.update(records.load_responses(store, run_id, REFERENCE, gen))
        if annotator is not None:
            return judge_reference(o, model, store, run_id, data, answers, refs, gen_failures, annotator,
                                       refresh=force)
        return judge_robust(o, model, store, run_id, data, answers, refs, gen_failures, refresh=force)


def save_items(store, run_id: str, data: InstructionSet) -> None:
    """The instructions as items and the reference outputs as responses, under the run id."""
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
