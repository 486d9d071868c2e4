"""``mtbench-single``: MT-Bench single-answer grading, 1-10.

Uses MT-Bench's own judge prompts (read from the installed data file):
``single-v1``; ``single-math-v1`` when a reference answer is given; and the
``-multi-turn`` variants when the request carries two turns (the second
turn's answer is graded). The rating is parsed from ``[[rating]]`` (and
lenient variants), or, with ``use_logprobs``, read as the expected value
over the digit tokens at the rating's position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.judging import (
    digit_distribution,
    expected_value,
    judge_params,
    parse_rating,
    run_with_retry,
    scores_from_logprobs,
)
from tapir.roles import Completion, JudgeRequest, Judgment, Message

from tapir_judges import mtbench_prompts as mp
from tapir_judges.prompts import SINGLE_NUDGE, SINGLE_SCORE_ONLY


@dataclass
class _Rating:
    score: float
    parsed: float | None  # the number in the text (None when read from the first token's digits)
    from_logprobs: bool
    digit_mass: float | None = None  # set when the score was read from the first token's digits


class MTBenchSingleJudge:
    """Single-answer grading with MT-Bench's prompts.

    Options: ``use_logprobs`` (ask for ``top_logprobs`` and read the rating
    as an expected value; falls back to the text when the backend returns
    none), ``score_only`` (append a request for the bare rating and cap
    the reply length: the fast path for small models; with
    ``use_logprobs`` a reply holding no number is read from its first
    token's digit alternatives, see :meth:`_first_token_digits`), ``params``
    (GenerationParams overrides), ``prompts_path`` (a judge_prompts.jsonl),
    ``top_logprobs`` (default 20).
    """

    name = "mtbench-single"
    kind = "single"
    needs_student = False

    def __init__(
        self,
        backend: Any,
        *,
        use_logprobs: bool = False,
        score_only: bool = False,
        params: dict[str, Any] | None = None,
        prompts_path: str | None = None,
        top_logprobs: int = 20,
    ):
        if backend is None:
            raise TapirError("judge 'mtbench-single' needs a judge model (set judge.model in the config)")
        self.backend = backend
        self.use_logprobs = use_logprobs
        self.score_only = score_only
        self.prompts = mp.load_prompts(prompts_path)
        defaults: dict[str, Any] = {"max_new_tokens": 16 if score_only else 512, "temperature": 0.0}
        if use_logprobs:
            defaults["top_logprobs"] = top_logprobs
        self.params = judge_params(defaults, params)

    # -- prompts ---------------------------------------------------------

    def choose(self, request: JudgeRequest) -> tuple[str, dict[str, str]]:
        """The MT-Bench prompt name for a request, and its template fields."""
        turns = request.turns or []
        if len(turns) > 2:
            raise TapirError(f"mtbench-single grades one or two turns; item {request.item_id} has {len(turns)}")
        if len(turns) == 2:
            t1, t2 = turns
            fields = {
                "question_1": t1.get("question", ""),
                "answer_1": t1.get("answer", ""),
                "question_2": t2.get("question", ""),
                "answer_2": t2.get("answer", request.answer_a),
            }
            refs = (t1.get("reference"), t2.get("reference"))
            if refs[0] and refs[1]:
                fields.update(ref_answer_1=refs[0], ref_answer_2=refs[1])
                return mp.SINGLE_MATH_MULTI, fields
            return mp.SINGLE_MULTI, fields
        if len(turns) == 1:
            t = turns[0]
            question, answer = t.get("question", request.question), t.get("answer", request.answer_a)
            reference = t.get("reference") or request.reference
        else:
            question, answer, reference = request.question, request.answer_a, request.reference
        fields = {"question": question, "answer": answer}
        if reference:
            fields["ref_answer_1"] = reference
            return mp.SINGLE_MATH, fields
        return mp.SINGLE, fields

    def messages(self, request: JudgeRequest) -> tuple[str, list[Message]]:
        name, fields = self.choose(request)
        prompt = self.prompts[name]
        try:
            user = prompt["prompt_template"].format(**fields)
        except KeyError as exc:
            raise TapirError(f"MT-Bench prompt {name} needs the field {exc}; check the prompts file") from None
        if self.score_only:
            user += SINGLE_SCORE_ONLY
        return name, [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]

    # -- parsing ---------------------------------------------------------

    def parse(self, completion: Completion) -> _Rating | None:
        found = parse_rating(completion.text, short_reply=self.score_only)
        if found is None:
            return self._first_token_digits(completion)
        if self.use_logprobs:
            def locate(text: str):
                hit = parse_rating(text, short_reply=self.score_only)
                return [hit] if hit else None

            values = scores_from_logprobs(completion, locate)
            if values:
                return _Rating(values[0], found.value, True)
        return _Rating(found.value, found.value, False)

    def _first_token_digits(self, completion: Completion) -> _Rating | None:
        """In score-only logprob mode, a reply that holds no number is still
        read when its FIRST token's top alternatives include score digits:
        the expected score given that the reply starts with one (how a small
        model that will not follow the format can judge at all). The digits'
        total probability is kept as ``details["digit_mass"]``."""
        if not (self.use_logprobs and self.score_only and completion.logprobs):
            return None
        dist = digit_distribution(completion.logprobs, 0)
        score = expected_value(dist)
        if score is None:
            return None
        return _Rating(score, None, True, digit_mass=sum(dist.values()))

    # -- judging ---------------------------------------------------------

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        built = [self.messages(r) for r in requests]
        outcomes = run_with_retry(
            self.backend, [m for _, m in built], self.params, self.parse, SINGLE_NUDGE, what="[[rating]]"
        )
        out = []
        for request, (name, _), o in zip(requests, built, outcomes):
            details: dict[str, Any] = {"prompt": name, "retried": o.retried}
            if request.category in mp.REFERENCE_CATEGORIES and name in (mp.SINGLE, mp.SINGLE_MULTI):
                details["missing_reference"] = True
            if o.value is not None:
                details.update(parsed=o.value.parsed, logprobs=o.value.from_logprobs)
                if o.value.digit_mass is not None:
                    details.update(first_token=True, digit_mass=o.value.digit_mass)
            out.append(
                Judgment(
                    score_a=o.value.score if o.value is not None else None,
                    raw=o.raw,
                    error=o.error,
                    details=details,
                )
            )
        return out
