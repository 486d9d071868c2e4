"""``pairwise``: the TAPIR pairwise judge behind MFD.

Both answers are rated 1-10 for helpfulness, relevance, accuracy and level
of detail. By default the judge sees them in both orders, (a, b) and
(b, a); the second order's scores are mapped back and the two averaged, so
a judge's position bias cancels. When only one order parses, that order's
scores are used and ``details["orders_used"]`` is 1 (option
``require_both=True`` makes that an error instead); when neither parses the
judgment is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.judging import average_orders, combine_errors, judge_params, parse_pair, run_with_retry, scores_from_logprobs
from tapir.roles import Completion, JudgeRequest, Judgment

from tapir_judges.prompts import PAIRWISE_NUDGE, pairwise_messages


@dataclass
class _Pair:
    scores: tuple[float, float]  # (first shown, second shown)
    parsed: tuple[float, float]  # the numbers in the text
    from_logprobs: bool


class PairwiseJudge:
    """TAPIR's pairwise 1-10 judge.

    Options: ``both_orders`` (default True), ``require_both`` (default
    False), ``use_logprobs`` (read each score as an expected value over the
    digit-token logprobs at its position; falls back to the text when the
    backend returns none), ``score_only`` (ask for the two scores without an
    explanation, with a short reply: the fast path for small models),
    ``top_logprobs`` (default 20), ``params`` (GenerationParams overrides;
    default 512 new tokens, greedy).
    """

    name = "pairwise"
    kind = "pairwise"
    needs_student = False

    def __init__(
        self,
        backend: Any,
        *,
        both_orders: bool = True,
        require_both: bool = False,
        use_logprobs: bool = False,
        score_only: bool = False,
        top_logprobs: int = 20,
        params: dict[str, Any] | None = None,
    ):
        if backend is None:
            raise TapirError("judge 'pairwise' needs a judge model (set judge.model in the config)")
        self.backend = backend
        self.both_orders = both_orders
        self.require_both = require_both
        self.use_logprobs = use_logprobs
        self.score_only = score_only
        defaults: dict[str, Any] = {"max_new_tokens": 24 if score_only else 512, "temperature": 0.0}
        if use_logprobs:
            defaults["top_logprobs"] = top_logprobs
        self.params = judge_params(defaults, params)

    def parse(self, completion: Completion) -> _Pair | None:
        found = parse_pair(completion.text, short_reply=self.score_only)
        if found is None:
            return None
        parsed = (found[0].value, found[1].value)
        if self.use_logprobs:
            values = scores_from_logprobs(completion, lambda text: parse_pair(text, short_reply=self.score_only))
            if values:
                return _Pair((values[0], values[1]), parsed, True)
        return _Pair(parsed, parsed, False)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        for r in requests:
            if r.answer_b is None:
                raise TapirError(f"pairwise judge needs two answers; item {r.item_id} has no answer_b")
        orders = ("ab", "ba") if self.both_orders else ("ab",)
        prompts = []
        for order in orders:
            for r in requests:
                first, second = (r.answer_a, r.answer_b) if order == "ab" else (r.answer_b, r.answer_a)
                prompts.append(pairwise_messages(r.question, first, second, scores_only=self.score_only))
        outcomes = run_with_retry(self.backend, prompts, self.params, self.parse, PAIRWISE_NUDGE, what="pair of scores")
        n = len(requests)
        return [self._combine({order: outcomes[k * n + i] for k, order in enumerate(orders)}) for i in range(n)]

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
            "orders": {k: list(v) for k, v in mapped.items() if v is not None},
            "orders_used": used,
            "retried": any(o.retried for o in by_order.values()),
            "raw_by_order": {k: list(o.raw) for k, o in by_order.items()},
        }
        errors = {k: o.error for k, o in by_order.items() if o.error}
        if errors:
            details["order_errors"] = errors
        if used:
            details["logprobs"] = all(o.value.from_logprobs for o in by_order.values() if o.value is not None)
        raw = [text for o in by_order.values() for text in o.raw]
        if scores is None:
            return Judgment(raw=raw, error=combine_errors(errors.values()), details=details)
        if self.require_both and used < len(by_order):
            return Judgment(raw=raw, error=combine_errors(errors.values()), details=details)
        return Judgment(score_a=scores[0], score_b=scores[1], raw=raw, details=details)
