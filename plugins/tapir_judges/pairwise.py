"""``pairwise``: the pairwise judge behind MFD (the paper's Table 8 prompt by default).

Both answers are rated 1-10 for helpfulness, relevance, accuracy and level
of detail. By default the judge sees them in both orders, (a, b) and
(b, a); the second order's scores are mapped back and the two averaged, so
a judge's position bias cancels (the paper, Appendix E: "we run it
symmetrically twice ... and calculate the average score"). When only one
order parses, that order's scores are used and ``details["orders_used"]``
is 1 (option ``require_both`` makes that an error instead); when neither
parses the judgment is an error.

Prompts (option ``prompt``): ``table8`` (default), the paper's Table 8 in our
own words with its output format (``Evaluation evidence: ...`` then ``Score
of the Assistant 1: X`` and ``Score of the Assistant 2: Y``), parsed with
that format first and with tapir's lenient parser as the fallback; and
``tapir``, tapir's own wording (``Assistant 1: X`` lines), parsed leniently.
``details["parsed_by"]`` records, per order, which parser read the scores
(``table8`` or ``lenient``); ``details["read_by"]`` how the judgment was
read, the weaker of its orders (``logprobs``; ``reference parser``: Table
8's format; ``lenient parser``: the tapir prompt's parser; ``lenient
fallback``: the text, where logprobs were asked for and not given, or
Table 8's format was not followed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import model_validator

from tapir.errors import TapirError
from tapir.judge_reads import (
    READ_FALLBACK,
    READ_LENIENT,
    READ_LOGPROBS,
    READ_REFERENCE,
    warn_missing_logprobs,
    weakest_read,
)
from tapir.judging import (
    DENOMINATOR,
    RATING_NUM,
    Found,
    average_orders,
    combine_errors,
    judge_meta,
    mask_scales,
    parse_pair,
    run_with_retry,
    scores_from_logprobs,
)
from tapir.options import GenerationOverrides, Options, generation_params, option
from tapir.roles import CallEstimate, Completion, GenerationParams, JudgeRequest, Judgment

from tapir_judges.prompts import PAIRWISE_PROMPTS

_TABLE8_LINE = {
    tag: re.compile(
        r"^[\s\*_#>\-]*score\s+of\s+the\s+assistant\s*" + tag + r"[\s\*_]*:[\s\*_\[]*" + RATING_NUM
        + r"(?:\s*/\s*" + DENOMINATOR + r")?",
        re.IGNORECASE | re.MULTILINE,
    )
    for tag in ("1", "2")
}


def parse_table8(text: str) -> tuple[Found, Found] | None:
    """The two scores in Table 8's output format: the last ``Score of the
    Assistant 1: X`` and ``Score of the Assistant 2: Y`` lines (case, bold
    marks and a trailing ``/10`` tolerated). A line whose number is outside
    1-10, a scale (``1-10``) or a range in place of the number make it no
    Table 8 reply (``None``; the lenient parser may still read it)."""
    if not text:
        return None
    masked = mask_scales(text)
    pair = []
    for pattern in _TABLE8_LINE.values():
        last = None
        for match in pattern.finditer(masked):
            last = match
        if last is None or not 1.0 <= float(last.group(1)) <= 10.0:
            return None
        pair.append(Found(float(last.group(1)), last.start(1), last.end(1)))
    return pair[0], pair[1]


@dataclass
class _Pair:
    scores: tuple[float, float]  # (first shown, second shown)
    parsed: tuple[float, float]  # the numbers in the text
    from_logprobs: bool
    parsed_by: str  # "table8" | "lenient"
    read_by: str  # tapir.judge_reads.READ_METHODS


class PairwiseJudge:
    """The pairwise 1-10 judge (both orders averaged)."""

    name = "pairwise"
    kind = "pairwise"
    needs_student = False  # judged with the judge model, not the student's backend
    reads_student_answer = True  # compares the student's answer with the teacher's
    needs_model = True  # a judge model (judge.model) is required

    class Options(Options):
        prompt: Literal["table8", "tapir"] = option(
            "table8", "judge prompt: the paper's Table 8 (default) or tapir's own wording")
        both_orders: bool = option(True, "judge in both orders, (a, b) and (b, a), and average")
        require_both: bool = option(False, "a judgment where only one order parsed is an error")
        use_logprobs: bool = option(
            False, "read each score as the expected value over the digit-token logprobs at its position")
        score_only: bool = option(False, "ask for the two scores without an explanation (short replies)")
        top_logprobs: int = option(20, "alternatives per token asked for with use_logprobs", ge=1, le=20)
        params: GenerationOverrides | None = option(
            None, "generation overrides: max_new_tokens, temperature, top_p, stop, top_logprobs, seed "
                  "(default: 512 new tokens, or 24 with score_only; greedy)")
        judge_repeats: int = option(
            1, "judge each pair this many times (sampled: needs params.temperature > 0), each repeat a distinct "
               "sample; the scores are the means, details.spread their standard deviations", ge=1)

        @model_validator(mode="after")
        def _repeats_sample(self):
            if self.judge_repeats > 1 and not ((self.params and self.params.temperature) or 0.0) > 0:
                raise ValueError(
                    f"judge_repeats: {self.judge_repeats} repeats a greedy judge (temperature 0), which answers "
                    "the same each time: set params: {temperature: 0.7} (or another > 0), or judge_repeats: 1")
            return self

    @staticmethod
    def estimate(stage: str, n: int, prompt_tokens: int, options: "PairwiseJudge.Options") -> list[CallEstimate]:
        """Calls for ``n`` pairs (tapir.roles.Estimating): one per order asked
        (both by default) and per repeat; each prompt holds the question and
        both answers plus the template."""
        per_pair = (2 if options.both_orders else 1) * options.judge_repeats
        return [CallEstimate("judge", n * per_pair, 2 * prompt_tokens + 300)]

    def __init__(self, backend: Any, options: "PairwiseJudge.Options"):
        if backend is None:
            raise TapirError("judge 'pairwise' needs a judge model (set judge.model in the config)")
        self.backend = backend
        self.options = options
        self.prompt = options.prompt
        self.both_orders = options.both_orders
        self.require_both = options.require_both
        self.use_logprobs = options.use_logprobs
        self.score_only = options.score_only
        self.repeats = options.judge_repeats
        self._messages, self._nudge = PAIRWISE_PROMPTS[options.prompt]
        self.params = self.generation(options)

    @staticmethod
    def generation(options: "PairwiseJudge.Options") -> GenerationParams:
        """The judge's generation parameters (tapir.roles.Sampling): short
        replies with score_only, else 512 tokens; greedy; ``params`` override."""
        defaults: dict[str, Any] = {"max_new_tokens": 24 if options.score_only else 512, "temperature": 0.0}
        if options.use_logprobs:
            defaults["top_logprobs"] = options.top_logprobs
        return generation_params(defaults, options.params)

    def find(self, text: str) -> tuple[tuple[Found, Found] | None, str]:
        """The two scores and which parser read them: Table 8's format first
        (with the table8 prompt), then the lenient parser."""
        if self.prompt == "table8":
            found = parse_table8(text)
            if found is not None:
                return found, "table8"
        found = parse_pair(text, short_reply=self.score_only)
        return found, "lenient"

    def parse(self, completion: Completion) -> _Pair | None:
        found, how = self.find(completion.text)
        if found is None:
            return None
        parsed = (found[0].value, found[1].value)
        if self.use_logprobs:
            values = scores_from_logprobs(completion, lambda text: self.find(text)[0])
            if values:
                return _Pair((values[0], values[1]), parsed, True, how, READ_LOGPROBS)
            return _Pair(parsed, parsed, False, how, READ_FALLBACK)  # asked for logprobs, read the text
        if self.prompt == "table8":  # Table 8's own format, else the lenient parser as its fallback
            return _Pair(parsed, parsed, False, how, READ_REFERENCE if how == "table8" else READ_FALLBACK)
        return _Pair(parsed, parsed, False, how, READ_LENIENT)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        for r in requests:
            if r.answer_b is None:
                raise TapirError(f"pairwise judge needs two answers; item {r.item_id} has no answer_b")
        orders = ("ab", "ba") if self.both_orders else ("ab",)
        prompts, samples, metas = [], [], []
        for repeat in range(self.repeats):
            for order in orders:
                for r in requests:
                    first, second = (r.answer_a, r.answer_b) if order == "ab" else (r.answer_b, r.answer_a)
                    prompts.append(self._messages(r.question, first, second, scores_only=self.score_only))
                    samples.append(r.draw * self.repeats + repeat)  # a fresh draw: past every repeat
                    metas.append(judge_meta(r))
        outcomes = run_with_retry(self.backend, prompts, self.params, self.parse, self._nudge, what="pair of scores",
                                  samples=samples, metas=metas)
        if self.use_logprobs:
            answered = [o.completion for o in outcomes if o.completion is not None]
            warn_missing_logprobs(self.name, self.backend.model_id,
                                  sum(1 for c in answered if not c.logprobs), len(answered))
        n, k = len(requests), len(orders)
        out = []
        for i in range(n):
            repeats = [
                self._combine({order: outcomes[(rep * k + j) * n + i] for j, order in enumerate(orders)})
                for rep in range(self.repeats)
            ]
            out.append(repeats[0] if self.repeats == 1 else _mean_of_repeats(repeats))
        return out

    def _combine(self, by_order: dict) -> Judgment:
        mapped: dict[str, tuple[float, float] | None] = {}
        for order, o in by_order.items():
            if o.value is None:
                mapped[order] = None
            elif order == "ab":
                mapped[order] = o.value.scores
            else:  # shown (b, a): map back to (a, b)
                mapped[order] = (o.value.scores[1], o.value.scores[0])
        scores, used = average_orders(mapped.get("ab"), mapped.get("ba"))
        details: dict[str, Any] = {
            "prompt": self.prompt,
            "orders": {k: list(v) for k, v in mapped.items() if v is not None},
            "orders_used": used,
            "parsed_by": {k: o.value.parsed_by for k, o in by_order.items() if o.value is not None},
            "retried": any(o.retried for o in by_order.values()),
            "raw_by_order": {k: list(o.raw) for k, o in by_order.items()},
        }
        errors = {k: o.error for k, o in by_order.items() if o.error}
        if errors:
            details["order_errors"] = errors
        if used:
            read = [o.value for o in by_order.values() if o.value is not None]
            details["logprobs"] = all(v.from_logprobs for v in read)
            details["read_by"] = weakest_read(v.read_by for v in read)
            if self.use_logprobs:
                missing = sum(1 for o in by_order.values() if o.completion is not None and not o.completion.logprobs)
                if missing:
                    details["logprobs_missing"] = missing
        raw = [text for o in by_order.values() for text in o.raw]
        if scores is None:
            return Judgment(raw=raw, error=combine_errors(errors.values()), details=details)
        if self.require_both and used < len(by_order):
            return Judgment(raw=raw, error=combine_errors(errors.values()), details=details)
        return Judgment(score_a=scores[0], score_b=scores[1], raw=raw, details=details)


def _mean_of_repeats(repeats: list[Judgment]) -> Judgment:
    """One judgment from several repeats of a pair: the mean scores over
    the repeats that scored, and their spread (population standard
    deviation of score_a, score_b and their difference, the MFD) in
    ``details["spread"]``; each repeat's scores in ``details["repeats"]``.
    The first repeat's details (prompt, orders, ...) are kept; an order
    that failed in any repeat is in ``order_errors`` (keyed ``ab#2``: order
    and repeat); no repeat scored: the judgment is an error."""
    from statistics import fmean, pstdev

    scored = [j for j in repeats if j.error is None and j.score_a is not None and j.score_b is not None]
    details = dict(repeats[0].details)
    details["repeats"] = [
        {"score_a": j.score_a, "score_b": j.score_b} if j in scored else {"error": j.error} for j in repeats]
    details["repeats_used"] = len(scored)
    details["retried"] = any(j.details.get("retried") for j in repeats)
    order_errors = {f"{order}#{r}": err for r, j in enumerate(repeats)
                    for order, err in (j.details.get("order_errors") or {}).items()}
    details.pop("order_errors", None)
    if order_errors:
        details["order_errors"] = order_errors
    raw = [text for j in repeats for text in j.raw]
    if not scored:
        return Judgment(raw=raw, error=combine_errors(j.error for j in repeats), details=details)
    a, b = [j.score_a for j in scored], [j.score_b for j in scored]
    details["spread"] = {"score_a": pstdev(a), "score_b": pstdev(b), "mfd": pstdev([x - y for x, y in zip(a, b)])}
    details["read_by"] = weakest_read(j.details.get("read_by") for j in scored)
    details["logprobs"] = all(j.details.get("logprobs") for j in scored)
    return Judgment(score_a=fmean(a), score_b=fmean(b), raw=raw, details=details)
