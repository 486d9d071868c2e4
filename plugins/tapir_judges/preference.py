"""``preference``: AlpacaEval 2.0-style preference between two outputs.

``answer_a`` is the reference (baseline) output, ``answer_b`` the model's.
The judge answers with one letter (A or B). With logprobs the preference is
continuous: P(b better) is the probability of the model's letter, normalised
over the two verdict letters at the verdict token (AlpacaEval 2.0's weighted
win). Without logprobs the letter is parsed: 1.0, 0.0, or 0.5 for a tie.

This is tapir's own lenient preference judge (its prompt, A/B verdicts,
greedy decoding, one nudge when no verdict is found). The ``alpacaeval``
evaluator uses it only with ``judge_mode: robust``; its default reference
mode judges with alpaca_eval's own annotator instead
(tapir_alpacaeval.annotator).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import tapir.options
from tapir.errors import TapirError
from tapir.judge_reads import READ_FALLBACK, READ_LENIENT, READ_LOGPROBS, warn_missing_logprobs, weakest_read
from tapir.judging import (
    clean_token,
    combine_errors,
    judge_meta,
    run_with_retry,
)
from tapir.roles import Completion, JudgeRequest, Judgment

from tapir_judges.prompts import PREFERENCE_NUDGE, VERDICT_TOKENS, preference_messages

ORDERS = ("random", "fixed", "both")

_BARE = re.compile(
    r"^[\W_]*(?:(?i:output|answer)\s*)?[\(\[]*([AB])[\)\]\*\.]*(?:$|[:\n,!]|\s+is\b(?!\s+(?i:not|no|worse))|\s+-)")
_BARE_LOWER = re.compile(r"^[\W_]*([ab])[\W_]*$")
_STATED = re.compile(
    r"\b(?:output|answer)\s*[\(\[]?([AB])[\)\]]?\s+is\s+(?:the\s+|clearly\s+|much\s+|slightly\s+)?better", re.I)
_BRACKETED = re.compile(r"\[\[\s*([AB])\s*\]\]")
_TIE = re.compile(r"\b(?:tie|equally good|equal(?:ly)?|both (?:are )?(?:equally )?(?:good|bad))\b", re.I)


@dataclass
class _Verdict:
    p_b: float  # P(the output labelled B is better)
    weighted: bool
    letter: str | None
    read_by: str = READ_LENIENT


def parse_verdict_text(text: str) -> float | None:
    """P(B better) from a verdict's text: 1.0 for B, 0.0 for A, 0.5 for a tie."""
    text = (text or "").strip()
    for pattern in (_BRACKETED, _STATED, _BARE, _BARE_LOWER):
        match = pattern.search(text)
        if match:
            return 1.0 if match.group(1).upper() == "B" else 0.0
    if _TIE.search(text):
        return 0.5
    return None


def verdict_from_logprobs(completion: Completion) -> tuple[float, str] | None:
    """(P(B better), chosen letter) from the first token that is a verdict
    letter, normalising over the letters' probabilities among its top
    alternatives. ``None`` when no token is a verdict letter."""
    for entry in completion.logprobs or []:
        letter = clean_token(entry.token).strip()
        if letter not in VERDICT_TOKENS:
            continue
        mass = {v: 0.0 for v in VERDICT_TOKENS}
        for token, logprob in entry.top or [(entry.token, entry.logprob)]:
            key = clean_token(token).strip()
            if key in mass and logprob is not None:
                mass[key] += math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            return None
        return mass["B"] / total, letter
    return None


def _swapped(request: JudgeRequest) -> bool:
    """A stable coin flip per request (so a re-run sends the same prompt)."""
    key = "\x1f".join([request.question, request.answer_a, request.answer_b or ""])
    return hashlib.sha256(key.encode()).digest()[0] & 1 == 1


class PreferenceJudge:
    """Which of two outputs is better, as P(answer_b better) (see the
    module docstring; options in :class:`PreferenceJudge.Options`)."""

    name = "preference"
    kind = "preference"
    needs_student = False
    needs_model = True  # a judge model (judge.model) is required
    reads_student_answer = True

    class Options(tapir.options.Options):
        use_logprobs: bool = tapir.options.option(
            True, "ask for top_logprobs and weight the verdict; falls back to the text when the backend gives none")
        top_logprobs: int = tapir.options.option(5, "alternatives asked at the verdict token", ge=1, le=20)
        order: Literal["random", "fixed", "both"] = tapir.options.option(
            "random", "random: a stable per-item coin decides which output is shown first; fixed: reference "
                      "first; both: both orders, averaged")
        params: tapir.options.GenerationOverrides | None = tapir.options.option(
            None, "generation overrides: max_new_tokens, temperature, top_p, stop, top_logprobs, seed "
                  "(default: one new token, greedy)")

    def __init__(self, backend: Any, options: "PreferenceJudge.Options | None" = None):
        options = options if options is not None else self.Options()
        if backend is None:
            raise TapirError("judge 'preference' needs a judge model (set judge.model in the config)")
        self.backend = backend
        self.options = options
        self.use_logprobs = options.use_logprobs
        self.order = options.order
        self.params = self.generation(options)

    @staticmethod
    def generation(options: "PreferenceJudge.Options") -> Any:
        """The judge's generation parameters (tapir.roles.Sampling): one new
        token, greedy, its logprobs; ``params`` override."""
        defaults: dict[str, Any] = {"max_new_tokens": 1, "temperature": 0.0}
        if options.use_logprobs:
            defaults["top_logprobs"] = options.top_logprobs
        return tapir.options.generation_params(defaults, options.params)

    def parse(self, completion: Completion) -> _Verdict | None:
        if self.use_logprobs:
            weighted = verdict_from_logprobs(completion)
            if weighted is not None:
                return _Verdict(weighted[0], True, weighted[1], READ_LOGPROBS)
        p = parse_verdict_text(completion.text)
        if p is None:
            return None
        return _Verdict(p, False, None, READ_FALLBACK if self.use_logprobs else READ_LENIENT)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        for r in requests:
            if r.answer_b is None:
                raise TapirError(f"preference judge needs answer_b (the model's output); item {r.item_id} has none")
        # (request index, swapped) for every prompt sent
        plan: list[tuple[int, bool]] = []
        for i, r in enumerate(requests):
            if self.order == "both":
                plan += [(i, False), (i, True)]
            else:
                plan.append((i, self.order == "random" and _swapped(r)))
        prompts = [
            preference_messages(requests[i].question, *(
                (requests[i].answer_b, requests[i].answer_a) if swapped else (requests[i].answer_a, requests[i].answer_b)
            ))
            for i, swapped in plan
        ]
        outcomes = run_with_retry(self.backend, prompts, self.params, self.parse, PREFERENCE_NUDGE,
                                  what="verdict (A or B)", metas=[judge_meta(requests[i]) for i, _ in plan],
                                  samples=[requests[i].draw for i, _ in plan])
        if self.use_logprobs:
            answered = [o.completion for o in outcomes if o.completion is not None]
            warn_missing_logprobs(self.name, self.backend.model_id,
                                  sum(1 for c in answered if not c.logprobs), len(answered))
        per_request: list[list[tuple[bool, Any]]] = [[] for _ in requests]
        for (i, swapped), o in zip(plan, outcomes):
            per_request[i].append((swapped, o))
        return [self._combine(parts) for parts in per_request]

    @staticmethod
    def _combine(parts) -> Judgment:
        raw = [text for _, o in parts for text in o.raw]
        retried = any(o.retried for _, o in parts)
        prefs, orders, weighted, read = [], {}, [], []
        for swapped, o in parts:
            if o.value is None:
                continue
            pref = 1.0 - o.value.p_b if swapped else o.value.p_b  # P(answer_b better)
            prefs.append(pref)
            orders["ba" if swapped else "ab"] = pref
            weighted.append(o.value.weighted)
            read.append(o.value.read_by)
        details: dict[str, Any] = {"retried": retried, "orders": orders, "orders_used": len(prefs)}
        if len(parts) == 1:
            details["swapped"] = parts[0][0]
        if not prefs:
            return Judgment(raw=raw, error=combine_errors(o.error for _, o in parts), details=details)
        details["weighted"] = all(weighted)
        details["read_by"] = weakest_read(read)
        return Judgment(preference=sum(prefs) / len(prefs), raw=raw, details=details)
