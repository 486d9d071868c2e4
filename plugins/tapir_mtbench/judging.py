"""How the ``mtbench`` evaluator judges its answers, in the mode its options
say: single-answer grading (``judge_mode=reference``: FastChat's request,
parser and -1 rule; ``robust``: tapir's lenient parser and one re-ask) and
pairwise against a baseline (both orders). Judgments already stored are
read, not asked again; the judge's calls are tagged with the item and turn.
Whether a run is forced (past the LLM-call cache) is passed in."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.plugins import registry
from tapir.progress import bar
from tapir.roles import Judgment, JudgeRequest
from tapir.store import records

from tapir_mtbench.data import CATEGORIES, REFERENCE_CATEGORIES, Question
from tapir_mtbench.options import SINGLE_JUDGE, Options
from tapir_mtbench.scoring import combine_orders, pairwise_rows, single_rows, verdict


def judge_args(options: Options) -> dict[str, Any]:
    """The judge plugin's options: ``judge_args``, and for mtbench-single the
    judge mode and the prompts beside a data_dir."""
    args = dict(options.judge_args or {})
    if options.judge_name == SINGLE_JUDGE:
        args["judge_mode"] = options.resolved_judge_mode
        prompts = prompts_beside(options.data_dir)
        if prompts is not None:
            args.setdefault("prompts_path", str(prompts))
    return args


def prompts_beside(data_dir: str | None) -> Path | None:
    """FastChat's judge_prompts.jsonl next to a data_dir (in it, or in its
    parent as in FastChat's data/ folder), so a data_dir brings its prompts."""
    if not data_dir:
        return None
    folder = Path(data_dir).expanduser()
    for path in (folder / "judge_prompts.jsonl", folder.parent / "judge_prompts.jsonl"):
        if path.is_file():
            return path
    return None


def prompts_file(options: Options) -> Path | None:
    """The FastChat judge prompts file mtbench-single reads (None for another judge)."""
    if options.judge_name != SINGLE_JUDGE:
        return None
    from tapir_judges.mtbench_prompts import find_prompts_file

    return find_prompts_file(judge_args(options).get("prompts_path"))


def make_judge(o: Options, store, run_id: str, todo: list[tuple[Question, int, JudgeRequest]], *, refresh: bool):
    """The judge over the judge model, its calls recorded in llm_calls
    with role ``judge`` and, for mtbench-single, the item and turn.
    ``refresh``: a forced run, past the LLM-call cache."""
    extra = {"refresh": True} if refresh else {}
    backend = load_cached(o.judge_model, store, run_id, options=o.judge_options or None, **extra)
    backend.tags = {**backend.tags, "role": "judge"}
    tagged = _ItemTags(backend)
    judge = registry().get("judges", o.judge_name).create(tagged, options=judge_args(o))
    from tapir_judges.single import MTBenchSingleJudge

    if isinstance(judge, MTBenchSingleJudge):
        for q, turn, request in todo:
            tagged.add(judge.messages(request)[1], q.item_id, turn)
    return judge


def judge_single(o: Options, store, run_id: str, questions: list[Question], answers: dict, meta: dict,
                 gen_failures: list[tuple[str, str]], *, refresh: bool) -> list[dict[str, Any]]:
    """Single-answer grading of every answered turn not judged yet (or
    judged and failed, with ``retry_failed``); the score rows."""
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
        judge = make_judge(o, store, run_id, todo, refresh=refresh)
        with bar(f"mtbench judging ({o.judge_model}, {o.resolved_judge_mode})", total=len(todo)) as progress:
            judgments = _judge_with_progress(judge, [r for _, _, r in todo], progress)
        _check_count(judgments, todo)
        records.save_judgments(
            store, run_id, o.judge_key, o.judge_model, judge.kind,
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
    common = {**row_meta(meta, failures), "readings": {k: readings[k] for k in sorted(readings)}}
    return single_rows(graded, in_run, common, category_failures=dict(by_category))


def judge_pairwise(o: Options, store, run_id: str, questions: list[Question], answers: dict, baseline: dict,
                   meta: dict, gen_failures: list[tuple[str, str]], *, refresh: bool) -> list[dict[str, Any]]:
    """The model's answers against the baseline's, both orders, for every
    turn both answered and not judged yet; the win-rate rows."""
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
        judge = make_judge(o, store, run_id, todo, refresh=refresh)
        with bar(f"mtbench pairwise judging ({o.judge_model})", total=len(todo)) as progress:
            judgments = _judge_with_progress(judge, [r for _, _, r in todo], progress)
        _check_count(judgments, todo)
        rows = []
        for (q, turn, _), j in zip(todo, judgments):
            ids = (answers[(q.item_id, turn)][0], baseline[(q.item_id, turn)][0])
            rows += [records.JudgmentRow(q.item_id, pos, turn, pj, *ids) for pos, pj in _split_orders(j)]
        records.save_judgments(store, run_id, o.judge_key, o.judge_model, judge.kind,
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
    return pairwise_rows(outcomes, "pairwise", row_meta(meta, failures))


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


def reference_of(q: Question, turn: int) -> str | None:
    return q.reference(turn) if q.category in REFERENCE_CATEGORIES else None


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


def row_meta(meta: dict, failures: list[tuple[str, str]]) -> dict[str, Any]:
    """The row meta of the benchmark-row contract, with the failures."""
    reasons = Counter(reason for _, reason in failures)
    example = f"{failures[0][0]}: {failures[0][1]}" if failures else None
    return {**meta, "failures": len(failures), "failure_reasons": dict(reasons), "failure_example": example}


def _check_count(judgments: list, todo: list) -> None:
    if len(judgments) != len(todo):
        raise TapirError(f"the judge returned {len(judgments)} judgments for {len(todo)} requests")


def _single_request(q: Question, turn: int, answers: dict) -> JudgeRequest:
    turns = []
    for t in range(1, turn + 1):
        entry = {"question": q.turns[t - 1], "answer": answers[(q.item_id, t)][1]}
        ref = reference_of(q, t)
        if ref:
            entry["reference"] = ref
        turns.append(entry)
    return JudgeRequest(
        question=q.turns[turn - 1],
        answer_a=answers[(q.item_id, turn)][1],
        reference=reference_of(q, turn),
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
        reference=reference_of(q, turn),
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
