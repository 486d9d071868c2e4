"""``mtbench-single``: MT-Bench single-answer grading, 1-10.

Uses MT-Bench's own judge prompts (read from the installed data file):
``single-v1``; ``single-math-v1`` when a reference answer is given; and the
``-multi-turn`` variants when the request carries two turns (the second
turn's answer is graded).

Two modes (option ``judge_mode``):

* ``reference`` (default): FastChat 0.2.36's ``run_judge_single``. The
  system and user messages as FastChat sends them to an OpenAI judge,
  temperature 0, 2048 new tokens, one request per judgment and no re-ask;
  the rating is the first ``[[n]]`` (else the first ``[n]``) in the reply,
  kept as it is when out of 1-10; a reply without one is FastChat's -1,
  returned as a failed judgment (``details["rating"] == -1``, error
  ``parse: no rating in judge reply``).
* ``robust``: tapir's lenient parser (``Rating: 8``, ``8/10``, the last
  ``[[n]]``, only 1-10), one re-ask with a nudge for an unparseable reply,
  512 new tokens; ``use_logprobs`` / ``score_only`` / ``params`` are
  available here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import model_validator

import tapir.options as opt
from tapir.errors import TapirError
from tapir.judge_reads import READ_FALLBACK, READ_LENIENT, READ_LOGPROBS, READ_REFERENCE, warn_missing_logprobs
from tapir.judging import (
    digit_distribution,
    expected_value,
    judge_meta,
    parse_rating,
    run_with_retry,
    scores_from_logprobs,
)
from tapir.roles import Completion, GenerationParams, GenerationRequest, JudgeRequest, Judgment, Message, OnResult

from tapir_judges import mtbench_prompts as mp
from tapir_judges.prompts import SINGLE_NUDGE, SINGLE_SCORE_ONLY


@dataclass
class _Rating:
    score: float
    parsed: float | None  # the number in the text (None when read from the first token's digits)
    from_logprobs: bool
    digit_mass: float | None = None  # set when the score was read from the first token's digits
    read_by: str = READ_LENIENT  # tapir.judge_reads.READ_METHODS


REFERENCE_PARAMS = {"max_new_tokens": 2048, "temperature": 0.0}  # run_judge_single's OpenAI call


class MTBenchSingleJudge:
    """Single-answer grading with MT-Bench's prompts (see the module docstring)."""

    name = "mtbench-single"
    kind = "single"
    needs_student = False
    needs_model = True  # a judge model (judge.model) is required
    reads_student_answer = True

    class Options(opt.Options):
        judge_mode: Literal["reference", "robust"] = opt.option(
            "reference", "'reference': FastChat's request, parser and -1 rule, no re-ask; "
            "'robust': tapir's lenient parser with one nudge re-ask")
        use_logprobs: bool = opt.option(
            False, "robust mode: ask for top_logprobs and read the rating as an expected value "
            "(falls back to the text when the backend returns none)")
        score_only: bool = opt.option(
            False, "robust mode: ask for the bare rating with a short reply (small judges); with "
            "use_logprobs a reply without a number is read from its first token's digits")
        params: opt.GenerationOverrides | None = opt.option(
            None, "robust mode: generation overrides (max_new_tokens, temperature, top_p, stop, top_logprobs, "
                  "seed)")
        prompts_path: str | None = opt.option(None, "a judge_prompts.jsonl (default: the installed MT-Bench data)")
        top_logprobs: int = opt.option(20, "robust mode with use_logprobs: alternatives per token", ge=1)

        @model_validator(mode="after")
        def _robust_only(self):
            extra = [k for k in ("use_logprobs", "score_only", "params") if getattr(self, k)]
            if self.judge_mode == "reference" and extra:
                raise ValueError(
                    f"{', '.join(extra)} change FastChat's request or parser; they need judge_mode=robust "
                    "(judge_mode=reference reproduces FastChat)")
            return self

    def __init__(self, backend: Any, options: "MTBenchSingleJudge.Options"):
        if backend is None:
            raise TapirError("judge 'mtbench-single' needs a judge model (set judge.model in the config)")
        self.backend = backend
        self.options = options
        self.judge_mode = options.judge_mode
        self.reference = options.judge_mode == "reference"
        self.use_logprobs = options.use_logprobs
        self.score_only = options.score_only
        self.prompts = mp.load_prompts(options.prompts_path)
        self.params = self.generation(options)

    @staticmethod
    def generation(options: "MTBenchSingleJudge.Options") -> GenerationParams:
        """The judge's generation parameters (tapir.roles.Sampling): FastChat's
        for reference answers, else short replies with score_only or 512
        tokens, greedy, ``params`` overriding."""
        if options.judge_mode == "reference":
            return GenerationParams(**REFERENCE_PARAMS)
        defaults: dict[str, Any] = {"max_new_tokens": 16 if options.score_only else 512, "temperature": 0.0}
        if options.use_logprobs:
            defaults["top_logprobs"] = options.top_logprobs
        return opt.generation_params(defaults, options.params)

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
        # FastChat: conv.set_system_message(...) then to_openai_api_messages(),
        # which leaves an empty system message out.
        system = [{"role": "system", "content": prompt["system_prompt"]}] if prompt["system_prompt"] != "" else []
        return name, [*system, {"role": "user", "content": user}]

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
                return _Rating(values[0], found.value, True, read_by=READ_LOGPROBS)
            # asked for logprobs, got none (or none at the number): the text decides
            return _Rating(found.value, found.value, False, read_by=READ_FALLBACK)
        return _Rating(found.value, found.value, False, read_by=READ_LENIENT)

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
        return _Rating(score, None, True, digit_mass=sum(dist.values()), read_by=READ_LOGPROBS)

    # -- judging ---------------------------------------------------------

    def judge(self, requests: Sequence[JudgeRequest], on_result: OnResult | None = None) -> list[Judgment]:
        """Grade every request in one backend call. ``on_result(index,
        completion)`` is called as each judge reply arrives (progress);
        in robust mode only for the first round."""
        if self.reference:
            return self._judge_reference(requests, on_result)
        built = [self.messages(r) for r in requests]
        outcomes = run_with_retry(
            self.backend, [m for _, m in built], self.params, self.parse, SINGLE_NUDGE, what="[[rating]]",
            metas=[judge_meta(r) for r in requests], samples=[r.draw for r in requests],
        )
        if self.use_logprobs:
            answered = [o.completion for o in outcomes if o.completion is not None]
            warn_missing_logprobs(self.name, self.backend.model_id,
                                  sum(1 for c in answered if not c.logprobs), len(answered))
        out = []
        for request, (name, _), o in zip(requests, built, outcomes):
            details: dict[str, Any] = {"prompt": name, "retried": o.retried, "judge_mode": "robust"}
            if request.category in mp.REFERENCE_CATEGORIES and name in (mp.SINGLE, mp.SINGLE_MULTI):
                details["missing_reference"] = True
            if o.value is not None:
                details.update(parsed=o.value.parsed, logprobs=o.value.from_logprobs, read_by=o.value.read_by)
                if self.use_logprobs and not o.completion.logprobs:
                    details["logprobs_missing"] = True
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

    def _judge_reference(self, requests: Sequence[JudgeRequest], on_result: OnResult | None) -> list[Judgment]:
        """FastChat's run_judge_single: one request each, no re-ask, its parser."""
        built = [self.messages(r) for r in requests]
        sent = [GenerationRequest(messages=list(m), params=self.params, sample=r.draw, meta=judge_meta(r))
                for r, (_, m) in zip(requests, built)]
        if not sent:
            completions = []
        elif on_result is not None:
            completions = self.backend.generate(sent, on_result=on_result)
        else:
            completions = self.backend.generate(sent)
        out = []
        for request, (name, _), completion in zip(requests, built, completions):
            details: dict[str, Any] = {"prompt": name, "retried": False, "judge_mode": "reference"}
            if request.category in mp.REFERENCE_CATEGORIES and name in (mp.SINGLE, mp.SINGLE_MULTI):
                details["missing_reference"] = True
            if completion.error is not None:
                out.append(Judgment(error=f"backend: {completion.error}", details=details))
                continue
            rating, problem = mp.reference_rating(completion.text)
            details["rating"] = rating
            if problem is not None:
                out.append(Judgment(raw=[completion.text], error=f"parse: {problem}", details=details))
            else:
                details["read_by"] = READ_REFERENCE
                out.append(Judgment(score_a=float(rating), raw=[completion.text], details=details))
        return out
