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
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import field_validator

import tapir.options
from tapir.errors import TapirError
from tapir.models import load_cached, resolve
from tapir.options import comma_list, option
from tapir.plugins import registry
from tapir.progress import bar
from tapir.roles import GenerationRequest, JudgeRequest, Judgment
from tapir.store import records

from tapir_alpacaeval.answers import Answers, answer_template, generate_answers
from tapir_alpacaeval.data import DEFAULT_CONFIG, InstructionSet, load_instructions
from tapir_alpacaeval.metrics import (Annotation, discrete_win_rate, length_controlled, reference_winrate,
                                      win_rate)

DEFAULT_JUDGE_MODEL = "openai/gpt-4-1106-preview"  # robust mode; reference mode reads the annotator's
TASK = "alpaca_eval"
REFERENCE = "reference"
NAN = float("nan")
log = logging.getLogger("tapir.alpacaeval")


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


def _ids(value: Any) -> Any:
    """instruction_ids as a list of indices: ``[3, 5]``, ``"3,5"``, ``["alpaca-3", 5]``."""
    if value is None or isinstance(value, list) and not value:
        return None if value is None else []
    if isinstance(value, (int, str)):
        value = comma_list(str(value)) or []
    out = []
    for v in value:
        text = str(v).strip()
        if text.startswith("alpaca-"):
            text = text[len("alpaca-"):]
        try:
            out.append(int(text))
        except ValueError:
            raise ValueError(f"{v!r} is not an instruction index (0, 1, ... or alpaca-<index>)") from None
    return out


def warn_missing_logprobs(judge_model: str, completions: list, asked: int, consequence: str) -> int:
    """Warn once when a judge asked for logprobs answered without them; returns how many."""
    answered = [c for c in completions if c.error is None]
    missing = sum(1 for c in answered if not c.logprobs)
    if missing:
        log.warning(f"alpacaeval: the judge {judge_model} was asked for logprobs (top_logprobs={asked}) and "
                    f"returned none in {missing} of {len(answered)} replies; {consequence}. Does its server "
                    f"return logprobs (OpenAI-compatible servers may ignore the logprobs parameter)?")
    return missing


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


class AlpacaEval:
    """AlpacaEval 2.0 evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md)."""

    name = "alpacaeval"

    class Options(tapir.options.Options):
        judge_mode: Literal["reference", "robust"] = option(
            "reference", "reference: alpaca_eval's own annotator, parser and metrics; robust: tapir's lenient "
                         "preference judge with re-asks")
        data_path: str | None = option(None, "local JSON/JSONL with instruction, output (reference), generator, "
                                             "dataset; default: the hub")
        hub_config: str = option(DEFAULT_CONFIG, "config of tatsu-lab/alpaca_eval on the hub")
        limit: int | None = option(None, "only the first N instructions (of instruction_ids, if given)", ge=1)
        instruction_ids: list[int] | None = option(
            None, "only these instructions: indices in the set (3,5 or alpaca-3,alpaca-5)")
        annotator: str = option("weighted_alpaca_eval_gpt4_turbo",
                                "reference mode: alpaca_eval annotator config (prompt, parameters, parser)")
        judge: str = option("preference", "robust mode: judge plugin")
        judge_model: str | None = option(
            None, "judge model id (default: openai/ + the annotator's model, gpt-4-1106-preview)")
        judge_options: dict[str, Any] = option(lambda: {}, "backend options of the judge model, e.g. "
                                                           "{\"api_base\": ...}", factory=True)
        judge_args: dict[str, Any] = option(lambda: {}, "robust mode: options of the judge plugin, e.g. "
                                                        "{\"top_logprobs\": 5}", factory=True)
        seed: int = option(0, "reference: alpaca_eval's annotator seed (its default 0) for the order swap; "
                              "robust: seed of tapir's order hash")
        max_new_tokens: int = option(1024, "output length limit of the model", ge=1)
        system_prompt: str | None = option(None, "system message for the model (default none)")
        model_options: dict[str, Any] = option(lambda: {}, "backend options of the model, e.g. "
                                                           "{\"batch_size\": 8}", factory=True)
        lc_glm: Literal["auto", "length_controlled_v1", "length_controlled_minimal"] = option(
            "auto", "auto: length_controlled_v1 for the full standard set, length_controlled_minimal otherwise")
        retry_failed: bool = option(True, "judge again, on a re-run, the instructions whose judgment failed")

        @field_validator("instruction_ids", mode="before")
        @classmethod
        def _parse_ids(cls, value: Any) -> Any:
            return _ids(value)

    def __init__(self, options: "AlpacaEval.Options | None" = None):
        self.options = options if options is not None else self.Options()
        self._refresh = False  # force: bypass the LLM-call cache

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
                annotator = self._annotator()
            except TapirError as exc:
                problems.append(str(exc))
        else:
            try:
                problems += registry().get("judges", o.judge).check_options(
                    self._robust_judge_args(), f"alpacaeval judge_args ({o.judge})")
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
            problems += model_problems(self._judge_model(annotator), self._judge_backend_options(annotator) or {},
                                       what="judge model")
        return problems

    def _annotator(self):
        from tapir_alpacaeval.annotator import ReferenceAnnotator

        return ReferenceAnnotator(self.options.annotator, seed=self.options.seed)

    def _judge_model(self, annotator=None) -> str:
        if self.options.judge_model:
            return self.options.judge_model
        return f"openai/{annotator.model_name}" if annotator is not None else DEFAULT_JUDGE_MODEL

    def _robust_judge_args(self) -> dict[str, Any]:
        args = dict(self.options.judge_args)
        if self.options.judge == "preference":
            args.setdefault("order", "fixed")  # this runner randomises the order itself
        return args

    # -- the run ----------------------------------------------------------------

    def run(self, model: str, store, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        """Answer, judge and score; ``force`` bypasses the LLM-call cache."""
        o = self.options
        self._refresh = force
        annotator = self._annotator() if o.judge_mode == "reference" else None  # fails before any write
        data = load_instructions(o.data_path, hub_config=o.hub_config, limit=o.limit,
                                 instruction_ids=o.instruction_ids)
        self._save_items(store, run_id, data)
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
            return self._reference(model, store, run_id, data, answers, refs, gen_failures, annotator, o)
        return self._robust(model, store, run_id, data, answers, refs, gen_failures, o)

    # -- shared steps -----------------------------------------------------------

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
    def _meta(o, judge_model: str, data: InstructionSet, answers: Answers, failures: Failures,
              read: dict[str, int]) -> dict[str, Any]:
        """What every row of the run carries: the row contract (tapir.bench.META_KEYS), which
        instructions (a subset says how many of the set, and their digest), how the model was
        prompted (``template``) and where its outputs came from, how the judgments were read."""
        return {"judge": judge_model, "judge_mode": o.judge_mode, "failures": failures.count,
                "failure_reasons": dict(failures.reasons), "failure_example": failures.example,
                "data_version": data.version, "subset": data.subset, **data.provenance,
                "template": answers.producer.template.label if answers.producer else None,
                "outputs": answers.describe(), "read": read}

    def _judge_backend_options(self, annotator=None) -> dict[str, Any] | None:
        """The judge's backend options; in reference mode a litellm judge also
        gets what it needs to send alpaca_eval's exact body."""
        options = dict(self.options.judge_options)
        if annotator is not None:
            try:
                spec = resolve(self._judge_model(annotator), options)
            except TapirError:
                spec = None
            if spec is not None and spec.backend == "litellm":
                options["extra"] = {**annotator.litellm_extra(), **(options.get("extra") or {})}
        return options or None

    # -- reference mode ---------------------------------------------------------

    def _reference(self, model, store, run_id, data, answers, refs, gen_failures, annotator, o):
        from tapir_alpacaeval.annotator import Pair

        judge_name = f"alpaca_eval:{annotator.name}"
        judge_model = self._judge_model(annotator)
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
            rows.append(self._row(p.key, position, Judgment(preference=0.5, details={"identical_outputs": True}),
                                  outputs, refs))
        if todo:
            backend = load_cached(judge_model, store, run_id, options=self._judge_backend_options(annotator),
                                  refresh=self._refresh)
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
                rows.append(self._row(p.key, position, j, outputs, refs))
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
        meta = self._meta(o, judge_model, data, answers, failures, {"logprobs": read["logprobs"], "text": 0,
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
        rows_out += self._per_dataset(data, annotations, "reference", meta)
        rows_out += self._failure_rows(meta, judge_failures, len(plan), gen_failures, len(data.instructions),
                                       "reference")
        return rows_out

    @staticmethod
    def _row(item_id, position, judgment, outputs, refs) -> records.JudgmentRow:
        model_out, ref_out = outputs[(item_id, 0)], refs[(item_id, 0)]
        a, b = (model_out, ref_out) if position == "ba" else (ref_out, model_out)
        return records.JudgmentRow(item_id, position, 0, judgment, a[0], b[0])

    @staticmethod
    def _per_dataset(data, annotations, mode, meta) -> list[dict[str, Any]]:
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

    @staticmethod
    def _failure_rows(meta, judge_failures, judged, gen_failures, total, mode) -> list[dict[str, Any]]:
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

    # -- robust mode ------------------------------------------------------------

    def _robust(self, model, store, run_id, data, answers, refs, gen_failures, o):
        outputs = answers.outputs
        judge_model = self._judge_model()
        judge_args = self._robust_judge_args()
        judged = self._judge_robust(store, run_id, data.instructions, outputs, refs, o, judge_model, judge_args)
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
        meta = self._meta(o, judge_model, data, answers, failures,
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
        rows += self._per_dataset(data, annotations, "robust", meta)
        rows += self._failure_rows(meta, judge_failures, len(judged), gen_failures, len(data.instructions), "robust")
        return rows

    def _judge_robust(self, store, run_id, instructions, outputs, refs, o, judge_model, judge_args):
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
            backend = load_cached(judge_model, store, run_id, options=self._judge_backend_options(),
                                  refresh=self._refresh)
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
            records.save_judgments(store, run_id, o.judge, judge_model, getattr(judge, "kind", "preference"), [
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
