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

This module is the orchestration (data, answers, the row meta, which mode);
the options are :mod:`tapir_mtbench.options`, the judging modes
:mod:`tapir_mtbench.judging`, the answers :mod:`tapir_mtbench.answers`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tapir.benchmodel import PromptFormat, format_warning, weights_fingerprint
from tapir.errors import TapirError
from tapir.plugins import registry
from tapir.progress import say
from tapir.store import records

from tapir_mtbench.answers import ROLE, AnswerSettings, check_conv_template, generate_answers, resolve_format
from tapir_mtbench.data import REFERENCE_CATEGORIES, STANDARD_COUNT, MTBenchData, Question, load_mtbench
from tapir_mtbench.judging import judge_args, judge_pairwise, judge_single, prompts_file, reference_of, row_meta
from tapir_mtbench.options import SINGLE_JUDGE, Options


class MTBench:
    """MT-Bench evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md for the options)."""

    name = "mtbench"

    Options = Options

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
                find_prompts_file(judge_args(o).get("prompts_path"))
            except TapirError as exc:
                problems.append(str(exc))
        try:  # the judge plugin's own options (names, types), before any answer is generated
            problems += registry().get("judges", o.judge_name).check_options(
                judge_args(o), f"mtbench judge '{o.judge_name}' (judge_args)")
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

    # -- the run --------------------------------------------------------------

    def run(self, model: str, store, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        o = self.options
        check_conv_template(o.conv_template)
        data = self._data()
        questions = self._questions(data)
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
            "data_version": _data_version(data, prompts_file(o)),
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
            baseline, base_info = self._baseline_answers(data, store, run_id, questions, refresh=force)
            meta["baseline_model"] = o.baseline_model
            base_failures = _generation_failures(questions, baseline, base_info, who="baseline answer")
            rows = judge_pairwise(o, store, run_id, questions, answers, baseline, meta,
                                  [*gen_failures, *base_failures], refresh=force)
            missing_base = 2 * len(questions) - len(_present(baseline, questions))
            rows.append({"task": "pairwise/generation", "metric": "baseline_failures", "value": float(missing_base),
                         "stderr": None, "n": 2 * len(questions),
                         "meta": {**row_meta(meta, base_failures), "errors": base_info.get("errors", [])[:20]}})
            prefix = "pairwise/"
        else:
            rows = judge_single(o, store, run_id, questions, answers, meta, gen_failures, refresh=force)
            prefix = ""
        missing = 2 * len(questions) - len(_present(answers, questions))
        rows.append({"task": f"{prefix}generation", "metric": "failures", "value": float(missing), "stderr": None,
                     "n": 2 * len(questions),
                     "meta": {**row_meta(meta, gen_failures), "errors": gen_info["errors"][:20]}})
        return rows

    # -- the baseline ----------------------------------------------------------

    def _baseline_answers(self, data: MTBenchData, store, run_id: str, questions: list[Question], *,
                          refresh: bool):
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
        settings.refresh = refresh
        return generate_answers(name, store, answers_id(name, settings, fmt, data), questions, settings)


# -- helpers ---------------------------------------------------------------------


def _items(data: MTBenchData) -> list[dict[str, Any]]:
    return [
        {
            "id": q.item_id,
            "instruction": q.turns[0],
            "output": reference_of(q, 1),
            "task_type": q.category,
            "meta": {"question_id": q.question_id, "category": q.category, "turns": q.turns,
                     "references": q.references if q.category in REFERENCE_CATEGORIES else None},
        }
        for q in data.questions
    ]


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


def _present(answers: dict, questions: list[Question]) -> list:
    return [(q.item_id, t) for q in questions for t in (1, 2) if (q.item_id, t) in answers]


def summary(rows: list[dict[str, Any]]) -> str:
    """A one-line text summary (for logs)."""
    return json.dumps({r["task"]: r["value"] for r in rows if r["metric"] in ("score", "win_rate_adjusted")})
