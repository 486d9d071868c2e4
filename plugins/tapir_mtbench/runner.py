"""The ``mtbench`` evaluator: answers, judgments and scores for one model.

Single mode (default): the model answers both turns of every question the
way FastChat 0.2.36's ``gen_model_answer`` does (see
:mod:`tapir_mtbench.answers`); a judge grades each turn 1-10, with the
reference answer for math, reasoning and coding. ``judge_mode=reference``
(the default) is FastChat's ``gen_judgment`` single mode and
``show_result``: the ``mtbench-single`` judge with FastChat's request and
parser, no re-ask, a reply without a rating scored -1 and left out of the
means (and counted in ``meta.failures``). ``judge_mode=robust`` is tapir's
lenient parser with one nudge re-ask; its judgments are stored under their
own judge key and never mixed with reference ones.

Pairwise mode (``mode=pairwise``): the model's answers against
``baseline_model``'s with tapir's pairwise judge in both orders (not
FastChat's pairwise prompts, so only ``judge_mode=robust``).

Everything lands in the store under the run id (items ``mtbench-<id>``,
responses with role ``mtbench-answer`` and round = turn, judgments with
round = turn), and what is there already is reused, so a re-run makes no
LLM call; failed answers and judgments are tried again on a re-run.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

import tapir.options as opt
from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.plugins import registry
from tapir.progress import bar
from tapir.roles import Judgment, JudgeRequest

from tapir.store import records
from tapir.benchmodel import PromptFormat, format_warning, weights_fingerprint
from tapir.progress import say
from tapir_mtbench.answers import ROLE, AnswerSettings, check_conv_template, generate_answers, resolve_format
from tapir_mtbench.data import (CATEGORIES, REFERENCE_CATEGORIES, STANDARD_COUNT, MTBenchData, Question,
                                load_mtbench)
from tapir_mtbench.scoring import combine_orders, pairwise_rows, single_rows, verdict

# A dated snapshot, never the moving alias "gpt-4" (FastChat's default): the alias has
# meant gpt-4-0613 since June 2023; docs/benchmarks-mtbench-alpacaeval.md says why this one.
DEFAULT_JUDGE_MODEL = "openai/gpt-4-0613"
SINGLE_JUDGE = "mtbench-single"
# mtbench-single options that change FastChat's request or parser (the judge refuses them in reference mode).
ROBUST_ONLY_JUDGE_ARGS = ("use_logprobs", "score_only", "params")


class MTBench:
    """MT-Bench evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md for the options)."""

    name = "mtbench"

    class Options(opt.Options):
        data_dir: str | None = opt.option(
            None, "folder in FastChat's layout (question.jsonl, reference_answer/); default: an installed copy")
        reference_model: str = opt.option("gpt-4", "reference answer file name under reference_answer/")
        categories: opt.CommaList = opt.option(None, "only these categories (comma-separated); a subset")
        question_ids: opt.CommaList = opt.option(None, "only these question ids (comma-separated); a subset")
        limit: int | None = opt.option(None, "only the first N questions (after the filters above); a subset",
                                       ge=1)
        mode: Literal["single", "pairwise"] = opt.option("single", "single-answer grading or pairwise")
        judge_mode: Literal["reference", "robust"] | None = opt.option(
            None, "'reference' (single mode's default): FastChat's judging and -1 rule; 'robust': tapir's "
            "lenient parser and one re-ask (pairwise mode's only mode)")
        judge: str | None = opt.option(None, "judge plugin (default mtbench-single; pairwise mode: pairwise)")
        judge_model: str = opt.option(DEFAULT_JUDGE_MODEL, "model id of the judge")
        judge_options: opt.JsonDict = opt.option({}, "backend options of the judge model, e.g. {api_base: ...}")
        judge_args: opt.JsonDict = opt.option({}, "options of the judge plugin itself, e.g. {prompts_path: ...}")
        baseline_model: str | None = opt.option(None, "pairwise mode: the model compared against")
        baseline_options: opt.JsonDict = opt.option({}, "pairwise mode: backend options of the baseline model")
        max_new_tokens: int = opt.option(1024, "answer length limit (FastChat's max_new_token)", ge=1)
        seed: int = opt.option(0, "torch seed before each question (FastChat: the choice index, 0)")
        conv_template: str = opt.option(
            "auto", "prompt format: 'auto' (FastChat's template when an adapter knows the model name, else a "
            "local checkpoint's chat template, its training format, else FastChat's one_shot), a FastChat "
            "template name, or 'chat_template' (plain chat messages: the tokenizer's template)")
        system_prompt: str | None = opt.option(None, "replace the template's system message (not FastChat's)")
        model_options: opt.JsonDict = opt.option({}, "backend options of the answering model, e.g. {batch_size: 8}")
        temperatures: dict[str, float] = opt.option(
            {}, "per-category temperature overrides, e.g. {writing: 0.0} (not FastChat's)")
        retry_failed: bool = opt.option(True, "judge again, on a re-run, the answers whose judgment failed")

        _temperatures = field_validator("temperatures", mode="before")(opt.json_object)

        @field_validator("categories")
        @classmethod
        def _known_categories(cls, value):
            for c in value or []:
                if c not in CATEGORIES:
                    raise ValueError(f"unknown category {c!r} (known: {', '.join(CATEGORIES)})")
            return value

        @model_validator(mode="after")
        def _consistent(self):
            if self.mode == "pairwise" and not self.baseline_model:
                raise ValueError("mode=pairwise needs baseline_model=MODEL (the model compared against)")
            judge = self.judge or ("pairwise" if self.mode == "pairwise" else SINGLE_JUDGE)
            if self.judge_mode == "reference" and (self.mode != "single" or judge != SINGLE_JUDGE):
                raise ValueError("judge_mode=reference is FastChat's single-answer grading: it needs mode=single "
                                 f"and judge {SINGLE_JUDGE}; use judge_mode=robust")
            mode_arg = (self.judge_args or {}).get("judge_mode")
            if mode_arg is not None and self.judge_mode is not None and mode_arg != self.judge_mode:
                raise ValueError("judge_args.judge_mode and judge_mode disagree; set judge_mode only")
            robust_only = [k for k in ROBUST_ONLY_JUDGE_ARGS if (self.judge_args or {}).get(k)]
            if robust_only and self.judge_name == SINGLE_JUDGE and self.resolved_judge_mode == "reference":
                raise ValueError(
                    f"judge_args {', '.join(robust_only)} change FastChat's judge request or parser, and "
                    "judge_mode is reference (FastChat's judging, the default): add -o judge_mode=robust, "
                    f"or drop {', '.join(robust_only)}")
            return self

        # -- derived ------------------------------------------------------

        @property
        def judge_name(self) -> str:
            return self.judge or ("pairwise" if self.mode == "pairwise" else SINGLE_JUDGE)

        @property
        def resolved_judge_mode(self) -> str:
            if self.judge_mode is not None:
                return self.judge_mode
            given = (self.judge_args or {}).get("judge_mode")
            if given in ("reference", "robust"):
                return given
            return "reference" if self.mode == "single" and self.judge_name == SINGLE_JUDGE else "robust"

        @property
        def judge_key(self) -> str:
            """The judge column of the stored judgments: plugin and mode, so
            reference and robust verdicts are never read for each other."""
            return f"{self.judge_name}/{self.resolved_judge_mode}"

        @property
        def subset(self) -> str | None:
            parts = []
            if self.categories:
                parts.append("categories=" + ",".join(self.categories))
            if self.question_ids:
                parts.append("question_ids=" + ",".join(self.question_ids))
            if self.limit:
                parts.append(f"limit={self.limit}")
            return " ".join(parts) or None

        def answer_settings(self, model_options: dict[str, Any] | None = None) -> AnswerSettings:
            return AnswerSettings(
                max_new_tokens=self.max_new_tokens, seed=self.seed, conv_template=self.conv_template,
                system_prompt=self.system_prompt,
                model_options=self.model_options if model_options is None else model_options,
                temperatures={k: float(v) for k, v in (self.temperatures or {}).items()},
            )

    def __init__(self, options: "MTBench.Options | None" = None):
        self.options = options if options is not None else self.Options()

    # -- checks before anything is written ------------------------------------

    def preflight(self, model: str) -> list[str]:
        """Problems found without generating anything: data, prompts, template, model ids."""
        o = self.options
        problems = []
        try:
            self._questions(self._data())
        except TapirError as exc:
            problems.append(str(exc))
        try:
            check_conv_template(o.conv_template)
        except TapirError as exc:
            problems.append(str(exc))
        if o.judge_name == SINGLE_JUDGE:
            from tapir_judges.mtbench_prompts import find_prompts_file

            try:
                find_prompts_file(self._judge_args().get("prompts_path"))
            except TapirError as exc:
                problems.append(str(exc))
        try:  # the judge plugin's own options (names, types), before any answer is generated
            problems += registry().get("judges", o.judge_name).check_options(
                self._judge_args(), f"mtbench judge '{o.judge_name}' (judge_args)")
        except TapirError as exc:
            problems.append(str(exc))
        try:
            from tapir.bench import model_problems
        except ImportError:  # pragma: no cover - an older core
            return problems
        problems += model_problems(model, o.model_options, what="model")
        problems += model_problems(o.judge_model, o.judge_options, what="judge model")
        if o.mode == "pairwise" and o.baseline_model:
            given = _baseline_file(o.data_dir, o.baseline_model)
            if given is None:
                problems += model_problems(o.baseline_model, o.baseline_options, what="baseline model")
        return problems

    def _data(self) -> MTBenchData:
        return load_mtbench(self.options.data_dir, reference_model=self.options.reference_model)

    def _questions(self, data: MTBenchData) -> list[Question]:
        o = self.options
        questions = [q for q in data.questions if not o.categories or q.category in o.categories]
        if o.question_ids:
            known = {str(q.question_id) for q in data.questions}
            unknown = [i for i in o.question_ids if i not in known]
            if unknown:
                raise TapirError(f"mtbench: unknown question id(s) {', '.join(unknown)} in {data.source}")
            wanted = set(o.question_ids)
            questions = [q for q in questions if str(q.question_id) in wanted]
        if o.limit:
            questions = questions[: o.limit]
        if not questions:
            raise TapirError(f"mtbench: no questions left after the filters ({o.subset})")
        return questions

    def _judge_args(self) -> dict[str, Any]:
        args = dict(self.options.judge_args or {})
        if self.options.judge_name == SINGLE_JUDGE:
            args["judge_mode"] = self.options.resolved_judge_mode
            prompts = _prompts_beside(self.options.data_dir)
            if prompts is not None:
                args.setdefault("prompts_path", str(prompts))
        return args

    # -- the run --------------------------------------------------------------

    def run(self, model: str, store, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        o = self.options
        check_conv_template(o.conv_template)
        data = self._data()
        questions = self._questions(data)
        self._force = force
        records.save_items(store, run_id, _items(data))
        settings = o.answer_settings()
        settings.conv_template, fmt = resolve_format(model, o.conv_template, o.system_prompt)
        warning = format_warning(model, fmt)
        if warning:
            say(f"warning: {warning}")
        settings.refresh = force
        where = answers_id(model, settings, fmt, data)
        if force:  # a forced run regenerates its answers too
            records.forget_responses(store, where, ROLE)
        answers, gen_info = generate_answers(model, store, where, questions, settings)
        judge_mode = o.resolved_judge_mode
        meta = {
            "judge": o.judge_model,
            "judge_mode": judge_mode,
            "data_version": _data_version(data, self._prompts_file()),
            "subset": _subset_label(o.subset, data, questions),
            "source": data.source,
            "questions": len(questions),
            "mode": o.mode,
            "judge_plugin": o.judge_name,
            "reference_model": data.reference_model,
            "temperatures": gen_info["temperatures"],
            "max_new_tokens": o.max_new_tokens,
            "conv_template": fmt.name.removeprefix("fastchat:"),
            "template": fmt.label,
            "template_warning": warning,
            "answers_id": where,
            "answers_reused": gen_info["reused"],
            "answers_generated": gen_info["generated"],
        }
        gen_failures = _generation_failures(questions, answers, gen_info)
        if o.mode == "pairwise":
            baseline, base_info = self._baseline_answers(data, store, run_id, questions)
            meta["baseline_model"] = o.baseline_model
            base_failures = _generation_failures(questions, baseline, base_info, who="baseline answer")
            rows = self._pairwise(store, run_id, questions, answers, baseline, meta,
                                  [*gen_failures, *base_failures])
            missing_base = 2 * len(questions) - len(_present(baseline, questions))
            rows.append({"task": "pairwise/generation", "metric": "baseline_failures", "value": float(missing_base),
                         "stderr": None, "n": 2 * len(questions),
                         "meta": {**_common(meta, base_failures), "errors": base_info.get("errors", [])[:20]}})
            prefix = "pairwise/"
        else:
            rows = self._single(store, run_id, questions, answers, meta, gen_failures)
            prefix = ""
        missing = 2 * len(questions) - len(_present(answers, questions))
        rows.append({"task": f"{prefix}generation", "metric": "failures", "value": float(missing), "stderr": None,
                     "n": 2 * len(questions),
                     "meta": {**_common(meta, gen_failures), "errors": gen_info["errors"][:20]}})
        return rows

    # -- judges -----------------------------------------------------------------

    def _prompts_file(self) -> Path | None:
        if self.options.judge_name != SINGLE_JUDGE:
            return None
        from tapir_judges.mtbench_prompts import find_prompts_file

        return find_prompts_file(self._judge_args().get("prompts_path"))

    def _judge(self, store, run_id: str, todo: list[tuple[Question, int, JudgeRequest]]):
        """The judge over the judge model, its calls recorded in llm_calls
        with role ``judge`` and, for mtbench-single, the item and turn."""
        o = self.options
        extra = {"refresh": True} if getattr(self, "_force", False) else {}
        backend = load_cached(o.judge_model, store, run_id, options=o.judge_options or None, **extra)
        backend.tags = {**backend.tags, "role": "judge"}
        tagged = _ItemTags(backend)
        judge = registry().get("judges", o.judge_name).create(tagged, options=self._judge_args())
        from tapir_judges.single import MTBenchSingleJudge

        if isinstance(judge, MTBenchSingleJudge):
            for q, turn, request in todo:
                tagged.add(judge.messages(request)[1], q.item_id, turn)
        return judge

    def _single(self, store, run_id: str, questions: list[Question], answers: dict, meta: dict,
                gen_failures: list[tuple[str, str]]) -> list[dict[str, Any]]:
        o = self.options
        stored = records.load_judgments(store, run_id, o.judge_key)
        todo: list[tuple[Question, int, JudgeRequest]] = []
        for q in questions:
            for turn in (1, 2):
                if (q.item_id, turn) not in answers:
                    continue
                have = stored.get((q.item_id, "single", turn))
                if have is not None and (have.ok or not o.retry_failed):
                    continue
                todo.append((q, turn, _single_request(q, turn, answers)))
        if todo:
            judge = self._judge(store, run_id, todo)
            with bar(f"mtbench judging ({o.judge_model}, {o.resolved_judge_mode})", total=len(todo)) as progress:
                judgments = _judge_with_progress(judge, [r for _, _, r in todo], progress)
            _check_count(judgments, todo)
            records.save_judgments(
                store, run_id, o.judge_key, o.judge_model, getattr(judge, "kind", "single"),
                [records.JudgmentRow(q.item_id, "single", turn, j, answers[(q.item_id, turn)][0])
                 for (q, turn, _), j in zip(todo, judgments)],
            )
            stored = records.load_judgments(store, run_id, o.judge_key)
        graded = []
        failures = list(gen_failures)
        readings: Counter = Counter()
        by_category: Counter = Counter()  # failures (answer or judgment) per category
        for q in questions:
            for turn in (1, 2):
                if (q.item_id, turn) not in answers:
                    by_category[q.category] += 1
                    continue
                j = stored.get((q.item_id, "single", turn))
                if j is None:
                    continue
                ok = j.ok and j.score_a is not None
                graded.append((q.category, turn, j.score_a if ok else None))
                if ok:
                    readings[reading(o.resolved_judge_mode, j)] += 1
                else:
                    by_category[q.category] += 1
                    failures.append((f"{q.item_id} turn {turn}", _reason(j.error)))
        in_run = [c for c in CATEGORIES if any(q.category == c for q in questions)]
        common = {**_common(meta, failures), "readings": {k: readings[k] for k in sorted(readings)}}
        return single_rows(graded, in_run, common, category_failures=dict(by_category))

    def _baseline_answers(self, data: MTBenchData, store, run_id: str, questions: list[Question]):
        """The baseline's answers: FastChat's ``model_answer/<name>.jsonl``
        beside the questions when there is one, else generated."""
        o = self.options
        name = o.baseline_model
        path = _baseline_file(o.data_dir, name)
        if path is not None:
            from tapir_mtbench.data import load_references

            given = load_references(path)
            rows = [(q.item_id, t, given[str(q.question_id)][t - 1], None)
                    for q in questions if str(q.question_id) in given for t in (1, 2)]
            records.save_responses(store, run_id, ROLE, name, rows)
            return records.load_responses(store, run_id, ROLE, name), {"source": str(path), "errors": []}
        settings = o.answer_settings(model_options=o.baseline_options)
        settings.conv_template, fmt = resolve_format(name, o.conv_template, o.system_prompt)
        settings.refresh = getattr(self, "_force", False)
        return generate_answers(name, store, answers_id(name, settings, fmt, data), questions, settings)

    def _pairwise(self, store, run_id: str, questions: list[Question], answers: dict, baseline: dict,
                  meta: dict, gen_failures: list[tuple[str, str]]) -> list[dict[str, Any]]:
        o = self.options
        stored = records.load_judgments(store, run_id, o.judge_key)
        todo = []
        for q in questions:
            for turn in (1, 2):
                key = (q.item_id, turn)
                if key not in answers or key not in baseline:
                    continue
                have = [stored.get((q.item_id, pos, turn)) for pos in ("ab", "ba")]
                both = stored.get((q.item_id, "both", turn))
                done = all(h is not None for h in have) or both is not None
                failed = any(h is not None and not h.ok for h in have) or (both is not None and not both.ok)
                if done and not (failed and o.retry_failed):
                    continue
                todo.append((q, turn, _pair_request(q, turn, answers, baseline)))
        if todo:
            judge = self._judge(store, run_id, todo)
            with bar(f"mtbench pairwise judging ({o.judge_model})", total=len(todo)) as progress:
                judgments = _judge_with_progress(judge, [r for _, _, r in todo], progress)
            _check_count(judgments, todo)
            rows = []
            for (q, turn, _), j in zip(todo, judgments):
                ids = (answers[(q.item_id, turn)][0], baseline[(q.item_id, turn)][0])
                rows += [records.JudgmentRow(q.item_id, pos, turn, pj, *ids) for pos, pj in _split_orders(j)]
            records.save_judgments(store, run_id, o.judge_key, o.judge_model, getattr(judge, "kind", "pairwise"),
                                   rows)
            stored = records.load_judgments(store, run_id, o.judge_key)
        outcomes = []
        failures = list(gen_failures)
        for q in questions:
            for turn in (1, 2):
                if (q.item_id, turn) not in answers or (q.item_id, turn) not in baseline:
                    continue
                outcome = _outcome(stored, q.item_id, turn)
                outcomes.append((q.category, turn, outcome))
                if outcome == "error":
                    errors = [j.error for pos in ("ab", "ba", "both")
                              if (j := stored.get((q.item_id, pos, turn))) is not None and j.error]
                    failures.append((f"{q.item_id} turn {turn}", _reason(errors[0] if errors else None)))
        return pairwise_rows(outcomes, "pairwise", _common(meta, failures))


# -- helpers ---------------------------------------------------------------------


class _ItemTags:
    """The judge's backend, passing every request on with the MT-Bench item
    and turn it grades in ``request.meta`` (recorded in llm_calls), found by
    its first user message (a re-ask keeps it). Everything else is the
    backend's."""

    def __init__(self, backend):
        self.backend = backend
        self._items: dict[str, tuple[str, int]] = {}

    def add(self, messages: list, item_id: str, turn: int) -> None:
        self._items[_first_user(messages)] = (item_id, turn)

    def generate(self, requests, on_result=None):
        for request in requests:
            found = self._items.get(_first_user(request.messages))
            if found is not None:
                request.meta = {"item_id": found[0], "round": found[1], **request.meta}
        if on_result is None:
            return self.backend.generate(requests)
        return self.backend.generate(requests, on_result=on_result)

    def __getattr__(self, name):  # model_id, capabilities, score(), ... are the backend's
        return getattr(self.backend, name)


def _first_user(messages: list) -> str:
    return next((m["content"] for m in messages if m.get("role") == "user"), "")


def _reference(q: Question, turn: int) -> str | None:
    return q.reference(turn) if q.category in REFERENCE_CATEGORIES else None


def _items(data: MTBenchData) -> list[dict[str, Any]]:
    return [
        {
            "id": q.item_id,
            "instruction": q.turns[0],
            "output": _reference(q, 1),
            "task_type": q.category,
            "meta": {"question_id": q.question_id, "category": q.category, "turns": q.turns,
                     "references": q.references if q.category in REFERENCE_CATEGORIES else None},
        }
        for q in data.questions
    ]


def _judge_with_progress(judge, requests: list[JudgeRequest], progress) -> list[Judgment]:
    """``judge.judge(requests)``, ticking the bar per reply when the judge
    reports replies (mtbench-single), else once at the end."""
    from tapir_judges.single import MTBenchSingleJudge

    if isinstance(judge, MTBenchSingleJudge):
        return judge.judge(requests, on_result=lambda i, c: progress.update())
    judgments = judge.judge(requests)
    progress.update(len(requests))
    return judgments


def reading(judge_mode: str, j) -> str:
    """How a scored judgment was read, from what is stored: ``reference``
    (FastChat's ``[[n]]`` parser, reference mode), and in robust mode
    ``logprobs`` (a non-integer score: the expected value of the rating
    token), ``re-asked`` (read after the nudge), ``brackets`` (a ``[[n]]``
    in the reply) or ``lenient`` (tapir's fallback parser)."""
    if judge_mode == "reference":
        return "reference"
    if j.score_a is not None and float(j.score_a) != int(j.score_a):
        return "logprobs"
    if len(j.raw) > 1:
        return "re-asked"
    if j.raw and "[[" in j.raw[-1]:
        return "brackets"
    return "lenient"


def _reason(error: str | None) -> str:
    """The failure reason of a stored judgment error (its kind prefix dropped)."""
    if not error:
        return "not judged"
    for prefix in ("parse: ", "backend: "):
        if error.startswith(prefix):
            error = error[len(prefix):]
    return error.splitlines()[0][:200] if error else "not judged"


def _generation_failures(questions: list[Question], answers: dict, info: dict,
                         who: str = "answer") -> list[tuple[str, str]]:
    """(where, reason) for every question-turn without an answer."""
    errors = {}
    for text in info.get("errors", []):
        where, _, reason = text.partition(": ")
        errors[where] = reason
    out = []
    for q in questions:
        for turn in (1, 2):
            if (q.item_id, turn) in answers:
                continue
            where = f"{q.item_id} turn {turn}"
            reason = errors.get(where) or ("turn one has no answer" if turn == 2 else "no answer")
            out.append((where, f"{who} failed: {reason.splitlines()[0][:200]}"))
    return out


def _common(meta: dict, failures: list[tuple[str, str]]) -> dict[str, Any]:
    """The row meta of the benchmark-row contract, with the failures."""
    reasons = Counter(reason for _, reason in failures)
    example = f"{failures[0][0]}: {failures[0][1]}" if failures else None
    return {**meta, "failures": len(failures), "failure_reasons": dict(reasons), "failure_example": example}


def answers_id(model: str, settings: AnswerSettings, fmt: PromptFormat, data: MTBenchData) -> str:
    """Where a model's MT-Bench answers are kept (the ``scope`` of their
    ``responses`` rows): a hash of what produces them, so any run that would
    generate the same answers reuses them, whatever its judge options. For a
    local checkpoint that is its weights fingerprint, not its path (a copy
    reuses, a retrained folder regenerates), with the backend prefix
    (``hf:``/``vllm:`` generate differently); then the template (its name
    and digest), the generation settings and the question file."""
    weights = weights_fingerprint(model)
    prefix, sep, rest = model.partition(":")
    backend = prefix if sep and rest and "/" not in prefix and weights is not None else None
    key = {
        "model": weights or model,
        "backend": backend,
        "template": fmt.label,
        "system_prompt": settings.system_prompt,
        "max_new_tokens": settings.max_new_tokens,
        "seed": settings.seed,
        "temperatures": {k: float(v) for k, v in sorted((settings.temperatures or {}).items())},
        "model_options": settings.model_options or {},
        "questions": _file_digest(data.files[0]),
    }
    text = json.dumps(key, sort_keys=True, default=str)
    return "mtbench-answers-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _subset_label(options_subset: str | None, data: MTBenchData, questions: list[Question]) -> str | None:
    """``meta.subset``: the options' selection, and a data_dir that is not
    the installed standard set (``3 of 80 questions; data_dir question.jsonl sha256:...``);
    None only for the standard set in full."""
    parts = [options_subset] if options_subset else []
    if len(questions) != STANDARD_COUNT:
        parts.append(f"{len(questions)} of {STANDARD_COUNT} questions")
    if not data.standard:
        parts.append(f"data_dir question.jsonl sha256:{_file_digest(data.files[0])}")
    return "; ".join(parts) or None


def _data_version(data: MTBenchData, prompts: Path | None) -> str:
    """A hash of what the numbers depend on: the question file, the
    reference answers and the judge prompts."""
    digest = hashlib.sha256()
    for path in data.files + ([prompts] if prompts is not None else []):
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def _baseline_file(data_dir: str | None, name: str | None) -> Path | None:
    if not data_dir or not name:
        return None
    path = Path(data_dir).expanduser() / "model_answer" / f"{Path(name).name}.jsonl"
    return path if path.is_file() else None


def _prompts_beside(data_dir: str | None) -> Path | None:
    """FastChat's judge_prompts.jsonl next to a data_dir (in it, or in its
    parent as in FastChat's data/ folder), so a data_dir brings its prompts."""
    if not data_dir:
        return None
    folder = Path(data_dir).expanduser()
    for path in (folder / "judge_prompts.jsonl", folder.parent / "judge_prompts.jsonl"):
        if path.is_file():
            return path
    return None


def _present(answers: dict, questions: list[Question]) -> list:
    return [(q.item_id, t) for q in questions for t in (1, 2) if (q.item_id, t) in answers]


def _check_count(judgments: list, todo: list) -> None:
    if len(judgments) != len(todo):
        raise TapirError(f"the judge returned {len(judgments)} judgments for {len(todo)} requests")


def _single_request(q: Question, turn: int, answers: dict) -> JudgeRequest:
    turns = []
    for t in range(1, turn + 1):
        entry = {"question": q.turns[t - 1], "answer": answers[(q.item_id, t)][1]}
        ref = _reference(q, t)
        if ref:
            entry["reference"] = ref
        turns.append(entry)
    return JudgeRequest(
        question=q.turns[turn - 1],
        answer_a=answers[(q.item_id, turn)][1],
        reference=_reference(q, turn),
        category=q.category,
        turns=turns,
        item_id=q.item_id,
    )


def _pair_request(q: Question, turn: int, answers: dict, baseline: dict) -> JudgeRequest:
    """Answer a is the model's, b the baseline's. For turn two the question
    shows the first exchange as context, since the two assistants' turn-one
    answers differ."""
    question = q.turns[turn - 1]
    if turn == 2:
        question = (f"(Second turn of a conversation. The user's first message was: {q.turns[0]!r}.)\n\n"
                    f"{q.turns[1]}")
    turns = [{"question": q.turns[t - 1], "answer_a": answers[(q.item_id, t)][1],
              "answer_b": baseline[(q.item_id, t)][1]} for t in range(1, turn + 1)]
    return JudgeRequest(
        question=question,
        answer_a=answers[(q.item_id, turn)][1],
        answer_b=baseline[(q.item_id, turn)][1],
        reference=_reference(q, turn),
        category=q.category,
        turns=turns,
        item_id=q.item_id,
    )


def _split_orders(j: Judgment) -> list[tuple[str, Judgment]]:
    """Per-order judgments ("ab": model shown first, "ba": baseline first)
    from a pairwise judgment's details, scores mapped to (model, baseline).
    A judge that gives no per-order details is stored as one "both" row."""
    orders = j.details.get("orders") if isinstance(j.details, dict) else None
    raw_by_order = j.details.get("raw_by_order", {}) if isinstance(j.details, dict) else {}
    errors = (j.details.get("order_errors", {}) or {}) if isinstance(j.details, dict) else {}
    if not isinstance(orders, dict) or set(orders) | set(errors) != {"ab", "ba"}:
        return [("both", j)]
    out = []
    for pos in ("ab", "ba"):
        raw = list(raw_by_order.get(pos, []))
        if pos in orders:
            a, b = orders[pos]
            out.append((pos, Judgment(score_a=a, score_b=b, raw=raw)))
        else:
            out.append((pos, Judgment(raw=raw, error=errors.get(pos) or j.error or "order not judged")))
    return out


def _outcome(stored: dict, item_id: str, turn: int) -> str:
    both = stored.get((item_id, "both", turn))
    if both is not None:
        if not both.ok or both.score_a is None or both.score_b is None:
            return "error"
        return verdict(both.score_a, both.score_b)
    verdicts = []
    for pos in ("ab", "ba"):
        j = stored.get((item_id, pos, turn))
        ok = j is not None and j.ok and j.score_a is not None and j.score_b is not None
        verdicts.append(verdict(j.score_a, j.score_b) if ok else None)
    return combine_orders(*verdicts)


def summary(rows: list[dict[str, Any]]) -> str:
    """A one-line text summary (for logs)."""
    return json.dumps({r["task"]: r["value"] for r in rows if r["metric"] in ("score", "win_rate_adjusted")})
