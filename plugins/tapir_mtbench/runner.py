"""The ``mtbench`` evaluator: answers, judgments and scores for one model.

Single mode (default): the model answers both turns of every question
(FastChat's per-category temperatures, turn two after its own turn-one
answer); a judge (default ``mtbench-single``) grades each turn 1-10, with
the reference answer for math, reasoning and coding. Pairwise mode
(``mode=pairwise``): the model's answers against ``baseline_model``'s, both
presentation orders, with inconsistent verdicts recorded.

Everything lands in the store under the run id (items ``mtbench-<id>``,
responses with role ``answer`` and round = turn, judgments with round =
turn), and what is there already is reused, so a re-run makes no LLM call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.plugins import registry
from tapir.roles import Judgment, JudgeRequest

from tapir.store import records
from tapir_mtbench.answers import ROLE, AnswerSettings, generate_answers
from tapir_mtbench.data import CATEGORIES, REFERENCE_CATEGORIES, MTBenchData, Question, load_mtbench
from tapir_mtbench.options import as_bool, as_dict, as_int, as_list, check_known
from tapir_mtbench.scoring import combine_orders, pairwise_rows, single_rows, verdict

OPTIONS = {
    "data_dir": "folder in FastChat's layout (question.jsonl, reference_answer/); default: an installed copy",
    "reference_model": "reference answer file name under reference_answer/ (default gpt-4)",
    "categories": "only these categories (comma-separated)",
    "mode": "single (default) or pairwise",
    "judge": "judge plugin (default mtbench-single; pairwise mode: pairwise)",
    "judge_model": "model id of the judge (default openai/gpt-4)",
    "judge_options": "backend options of the judge model, e.g. {\"api_base\": ...}",
    "judge_args": "options of the judge plugin itself, e.g. {\"use_logprobs\": true}",
    "baseline_model": "pairwise mode: the model compared against",
    "baseline_options": "pairwise mode: backend options of the baseline model",
    "max_new_tokens": "answer length limit (default 1024, as FastChat)",
    "seed": "sampling seed for the categories with temperature > 0 (default 0)",
    "system_prompt": "system message for the answering model (default none)",
    "model_options": "backend options of the answering model, e.g. {\"batch_size\": 8}",
    "temperatures": "per-category temperature overrides, e.g. {\"writing\": 0.0}",
    "retry_failed": "judge again the answers whose judgment failed (default false)",
}

DEFAULT_JUDGE_MODEL = "openai/gpt-4"


@dataclass
class Settings:
    data_dir: str | None = None
    reference_model: str = "gpt-4"
    categories: list[str] | None = None
    mode: str = "single"
    judge: str | None = None
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_options: dict[str, Any] | None = None
    judge_args: dict[str, Any] | None = None
    baseline_model: str | None = None
    baseline_options: dict[str, Any] | None = None
    retry_failed: bool = False
    answers: AnswerSettings | None = None

    @classmethod
    def parse(cls, options: dict[str, Any]) -> "Settings":
        check_known("mtbench", options, OPTIONS)
        o = dict(options)
        mode = str(o.get("mode", "single"))
        if mode not in ("single", "pairwise"):
            raise TapirError(f"mtbench: mode must be single or pairwise, not {mode!r}")
        categories = as_list("categories", o.get("categories"))
        for c in categories or []:
            if c not in CATEGORIES:
                raise TapirError(f"mtbench: unknown category {c!r} (known: {', '.join(CATEGORIES)})")
        if mode == "pairwise" and not o.get("baseline_model"):
            raise TapirError("mtbench: mode=pairwise needs -o baseline_model=MODEL (the model compared against)")
        temperatures = {k: float(v) for k, v in as_dict("temperatures", o.get("temperatures")).items()}
        return cls(
            data_dir=o.get("data_dir"),
            reference_model=str(o.get("reference_model", "gpt-4")),
            categories=categories,
            mode=mode,
            judge=o.get("judge") or ("pairwise" if mode == "pairwise" else "mtbench-single"),
            judge_model=str(o.get("judge_model") or DEFAULT_JUDGE_MODEL),
            judge_options=as_dict("judge_options", o.get("judge_options")),
            judge_args=as_dict("judge_args", o.get("judge_args")),
            baseline_model=o.get("baseline_model"),
            baseline_options=as_dict("baseline_options", o.get("baseline_options")),
            retry_failed=as_bool("retry_failed", o.get("retry_failed", False)),
            answers=AnswerSettings(
                max_new_tokens=as_int("max_new_tokens", o.get("max_new_tokens", 1024)),
                seed=as_int("seed", o.get("seed", 0)),
                system_prompt=o.get("system_prompt") or None,
                model_options=as_dict("model_options", o.get("model_options")),
                temperatures=temperatures,
            ),
        )


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


class MTBench:
    """MT-Bench evaluator (see the module docstring and
    docs/benchmarks-mtbench-alpacaeval.md for the options)."""

    name = "mtbench"

    def __init__(self, **options: Any):
        self.options = options
        Settings.parse(options)  # fail early on a bad option

    # -- the run --------------------------------------------------------------

    def run(self, model: str, store, *, run_id: str, **options: Any) -> list[dict[str, Any]]:
        settings = Settings.parse({**self.options, **options})
        data = load_mtbench(settings.data_dir, reference_model=settings.reference_model)
        questions = [q for q in data.questions if not settings.categories or q.category in settings.categories]
        if not questions:
            raise TapirError(f"mtbench: no questions left after the category filter {settings.categories}")
        records.save_items(store, run_id, _items(data))
        answers, gen_info = generate_answers(model, store, run_id, questions, settings.answers)
        meta = {
            "source": data.source,
            "questions": len(questions),
            "mode": settings.mode,
            "judge": settings.judge,
            "judge_model": settings.judge_model,
            "reference_model": data.reference_model,
            "temperatures": gen_info["temperatures"],
            "max_new_tokens": settings.answers.max_new_tokens,
        }
        if settings.mode == "pairwise":
            baseline, base_info = self._baseline_answers(settings, data, store, run_id, questions)
            meta["baseline_model"] = settings.baseline_model
            rows = self._pairwise(settings, store, run_id, questions, answers, baseline, meta)
            missing_base = 2 * len(questions) - len(_present(baseline, questions))
            rows.append({"task": "pairwise/generation", "metric": "baseline_failures", "value": float(missing_base),
                         "stderr": None, "n": 2 * len(questions), "meta": {"errors": base_info.get("errors", [])[:20]}})
            prefix = "pairwise/"
        else:
            rows = self._single(settings, store, run_id, questions, answers, meta)
            prefix = ""
        missing = 2 * len(questions) - len(_present(answers, questions))
        rows.append({"task": f"{prefix}generation", "metric": "failures", "value": float(missing), "stderr": None,
                     "n": 2 * len(questions), "meta": {"errors": gen_info["errors"][:20]}})
        return rows

    # -- judges -----------------------------------------------------------------

    def _judge(self, settings: Settings, store, run_id: str):
        backend = load_cached(settings.judge_model, store, run_id, options=settings.judge_options or None)
        args = dict(settings.judge_args or {})
        prompts = _prompts_beside(settings.data_dir)
        if settings.judge == "mtbench-single" and prompts is not None:
            args.setdefault("prompts_path", str(prompts))
        return registry().get("judges", settings.judge).create(backend, options=args)

    def _single(self, settings: Settings, store, run_id: str, questions: list[Question],
                answers: dict, meta: dict) -> list[dict[str, Any]]:
        stored = records.load_judgments(store, run_id, settings.judge)
        todo: list[tuple[Question, int, JudgeRequest]] = []
        for q in questions:
            for turn in (1, 2):
                if (q.item_id, turn) not in answers:
                    continue
                have = stored.get((q.item_id, "single", turn))
                if have is not None and (have.ok or not settings.retry_failed):
                    continue
                todo.append((q, turn, _single_request(q, turn, answers)))
        if todo:
            judge = self._judge(settings, store, run_id)
            judgments = judge.judge([r for _, _, r in todo])
            _check_count(judgments, todo)
            records.save_judgments(
                store, run_id, settings.judge, settings.judge_model, getattr(judge, "kind", "single"),
                [records.JudgmentRow(q.item_id, "single", turn, j, answers[(q.item_id, turn)][0])
                 for (q, turn, _), j in zip(todo, judgments)],
            )
            stored = records.load_judgments(store, run_id, settings.judge)
        graded = []
        for q in questions:
            for turn in (1, 2):
                j = stored.get((q.item_id, "single", turn))
                if j is not None:
                    graded.append((q.category, turn, j.score_a if j.ok and j.score_a is not None else None))
        return single_rows(graded, CATEGORIES, meta)

    def _baseline_answers(self, settings: Settings, data: MTBenchData, store, run_id: str,
                          questions: list[Question]):
        """The baseline's answers: FastChat's ``model_answer/<name>.jsonl``
        beside the questions when there is one, else generated."""
        name = settings.baseline_model
        folder = Path(settings.data_dir).expanduser() if settings.data_dir else None
        path = folder / "model_answer" / f"{Path(name).name}.jsonl" if folder else None
        if path is not None and path.is_file():
            from tapir_mtbench.data import load_references

            given = load_references(path)
            rows = [(q.item_id, t, given[str(q.question_id)][t - 1], None)
                    for q in questions if str(q.question_id) in given for t in (1, 2)]
            records.save_responses(store, run_id, ROLE, name, rows)
            return records.load_responses(store, run_id, ROLE, name), {"source": str(path)}
        base_settings = AnswerSettings(**{**settings.answers.__dict__, "model_options": settings.baseline_options})
        return generate_answers(name, store, run_id, questions, base_settings)

    def _pairwise(self, settings: Settings, store, run_id: str, questions: list[Question], answers: dict,
                  baseline: dict, meta: dict) -> list[dict[str, Any]]:
        stored = records.load_judgments(store, run_id, settings.judge)
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
                if done and not (failed and settings.retry_failed):
                    continue
                todo.append((q, turn, _pair_request(q, turn, answers, baseline)))
        if todo:
            judge = self._judge(settings, store, run_id)
            judgments = judge.judge([r for _, _, r in todo])
            _check_count(judgments, todo)
            rows = []
            for (q, turn, _), j in zip(todo, judgments):
                ids = (answers[(q.item_id, turn)][0], baseline[(q.item_id, turn)][0])
                rows += [records.JudgmentRow(q.item_id, pos, turn, pj, *ids) for pos, pj in _split_orders(j)]
            records.save_judgments(store, run_id, settings.judge, settings.judge_model,
                                   getattr(judge, "kind", "pairwise"), rows)
            stored = records.load_judgments(store, run_id, settings.judge)
        outcomes = []
        for q in questions:
            for turn in (1, 2):
                if (q.item_id, turn) not in answers or (q.item_id, turn) not in baseline:
                    continue
                outcomes.append((q.category, turn, _outcome(stored, q.item_id, turn)))
        return pairwise_rows(outcomes, "pairwise", meta)


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
