"""Backend-agnostic helpers for LLM judges.

* lenient parsing of a 1-10 rating (:func:`parse_rating`) and of a pair of
  scores (:func:`parse_pair`), each returning where in the text the number
  was, so the score can also be read from token logprobs;
* the expected score over digit-token logprobs (:func:`expected_score`);
* :func:`run_with_retry`: send every judge prompt in one backend call, then
  re-ask the unparseable ones once with a nudge, in one more call;
* :func:`average_orders` for pairwise judging in both orders, and
  :func:`summarize` for counting how a batch of judgments went.

Nothing here imports a model library; the judges in ``tapir_judges`` build
their prompts and call these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

from tapir.roles import Completion, GenerationParams, GenerationRequest, Judgment, Message, TokenLogprob

SCORE_MIN = 1.0
SCORE_MAX = 10.0

_NUM = r"(?<![\d.])(\d{1,2}(?:\.\d+)?)(?!\.?\d)"
# A rating's number: not negative ("-3" is no 3), and not the numerator of a
# fraction over anything but 10 ("4/5" is no 4 on a 1-10 scale; "8/10" is 8:
# the "10" of "/10" and "out of 10" is masked, see mask_scales).
RATING_NUM = r"(?<![\d.\-\u2212])(\d{1,2}(?:\.\d+)?)(?!\.?\d)(?!\s*(?:/|out\s+of)\s*\d)"
MASK = "\x00"
DENOMINATOR = MASK * 2  # a masked "10" after "/" or "out of"


# --------------------------------------------------------------------------
# Parsing

# Spans that hold numbers but state no rating: a scale's range ("1 to 10",
# "1-10", "from 1 to 10", "between 1 and 10", any "N-M" or "N to M" range a
# judge gives instead of a number), a scale's size ("out of 10", "/10",
# "10-point scale"). They are masked, character for character, before any
# parser looks for a number, so a parser can never read a rating out of them.
_RANGE_VALUE = r"\d{1,3}(?:\.\d+)?"
_RANGES = [
    # 1-10, 7-8, 1 to 10, 1 through 10, 1–10 (en/em dash, with or without spaces)
    re.compile(r"(?<![\w.\-])(" + _RANGE_VALUE + r")(?:\s*(?:to|through|thru|\u2013|\u2014)\s*|-)("
               + _RANGE_VALUE + r")(?!\.?\d)", re.IGNORECASE),
    re.compile(r"\bbetween\s+(" + _RANGE_VALUE + r")\s+and\s+(" + _RANGE_VALUE + r")(?!\.?\d)", re.IGNORECASE),
    # "1 - 10", "0 - 10": a spaced hyphen only between a scale's bounds
    # ("Assistant 1 - 8" is a label and a score)
    re.compile(r"(?<![\w.\-])([01])\s+-\s+(5|10|100)(?!\.?\d)"),
]
_SCALE_SIZES = [
    re.compile(r"(?:/|\bout\s+of)\s*(10)(?!\.?\d)", re.IGNORECASE),  # 8/10, 7 out of 10: the 10
    re.compile(r"\b(10)(?=\s*-?\s*point\b)", re.IGNORECASE),  # a 10-point scale
    re.compile(r"\bscale\s+of\s+(10)(?!\.?\d)", re.IGNORECASE),  # on a scale of 10
]


def mask_scales(text: str) -> str:
    """``text`` with every scale range and scale size replaced by NUL
    characters of the same length (offsets are kept, so a number found in
    the masked text is at the same place in the original). A range ``lo-hi``
    is masked when ``lo < hi``; ``8-6`` stays (it may be two scores)."""
    chars = list(text)
    for pattern in _RANGES:
        for match in pattern.finditer(text):
            if float(match.group(1)) < float(match.group(2)):
                chars[match.start() : match.end()] = MASK * (match.end() - match.start())
    for pattern in _SCALE_SIZES:
        for match in pattern.finditer(text):
            chars[match.start(1) : match.end(1)] = MASK * (match.end(1) - match.start(1))
    return "".join(chars)


@dataclass(frozen=True)
class Found:
    """A number found in a judge's text: its value and its character span."""

    value: float
    start: int
    end: int


def _in_range(value: float, lo: float = SCORE_MIN, hi: float = SCORE_MAX) -> bool:
    return lo <= value <= hi


def _last(pattern: re.Pattern[str], text: str, group: int = 1) -> Found | None | bool:
    """The LAST match of ``pattern`` (the verdict comes at the end, after an
    explanation that may quote the format's example): a :class:`Found` when
    it is from 1 to 10, ``False`` when it is out of range (the judge stated
    a number that is no rating: a parse failure, not a reason to look for
    another number), ``None`` when nothing matches."""
    last = None
    for match in pattern.finditer(text):
        last = match
    if last is None:
        return None
    value = float(last.group(group))
    return Found(value, last.start(group), last.end(group)) if _in_range(value) else False


_R = RATING_NUM
# Tried in order; the first pattern that matches decides.
_RATING_PATTERNS = [
    re.compile(r"\[\[\s*" + _R + r"\s*(?:/\s*" + DENOMINATOR + r"\s*)?\]\]"),  # [[8]]  [[8.5]]  [[8/10]]
    re.compile(r"(?<!\[)\[\s*" + _R + r"\s*(?:/\s*" + DENOMINATOR + r"\s*)?\](?!\])"),  # [8]
    re.compile(  # Rating: 8   score: 8   Overall score = 7.5   rating of **9**
        # ... and "Rating of 1 to 10: 7", "a rating of 1 to 10, I would say 8": after a masked
        # scale range, the first number later in the same sentence
        r"\b(?:rating|score|grade)\b\s*(?:is|of|:|=|-)?\s*(?:[\(\[]?" + MASK + r"+[^\d\n.!?" + MASK + r"]{0,40}?)?"
        r"[\*_\"']*\s*" + _R,
        re.IGNORECASE,
    ),
    re.compile(_R + r"(?=\s*(?:/|out\s+of)\s*" + DENOMINATOR + r"(?![\d" + MASK + r"]))", re.IGNORECASE),  # 8/10
]
_BARE_NUMBER = re.compile(r"^[^\w\-\u2212]*" + _R + r"\W*$")
_ANY_NUMBER = re.compile(_R)


def parse_rating(text: str, *, short_reply: bool = False) -> Found | None:
    """Find a 1-10 rating that a judge's reply states, leniently, and never
    one it does not state.

    Accepts ``[[8]]``, ``[[8.5]]``, ``[8]``, ``Rating: 8``, ``score: 8``,
    ``**Rating:** 8``, ``8/10``, ``8 out of 10``, ``Rating of 1 to 10: 7``
    and a reply that is just the number. A scale (``1 to 10``, ``1-10``,
    ``out of 10``, ``on a scale of 1-10``) is never read as a rating, nor is
    a range given instead of a number (``7-8``), a negative number, or a
    fraction over anything but 10. The first pattern (in the order above)
    that matches decides, by its last match; when that number is outside
    1-10 the reply has no rating. With ``short_reply`` (the judge was asked
    for the number only) a reply whose first line is just a number, or that
    holds exactly one number, gives it as a last resort. Returns ``None`` when the reply
    states no rating from 1 to 10.
    """
    if not text:
        return None
    masked = mask_scales(text)
    for pattern in _RATING_PATTERNS:
        found = _last(pattern, masked)
        if found is False:
            return None
        if found is not None:
            return found
    match = _BARE_NUMBER.match(masked)
    if match:
        value = float(match.group(1))
        return Found(value, match.start(1), match.end(1)) if _in_range(value) else None
    if short_reply:
        first = re.match(r"\s*([^\n]*)", masked)
        match = _BARE_NUMBER.match(first.group(1)) if first else None
        if match:  # "8\n\nThe answer has 3 flaws"
            value = float(match.group(1))
            return Found(value, first.start(1) + match.start(1), first.start(1) + match.end(1)) if _in_range(value) else None
        numbers = list(_ANY_NUMBER.finditer(masked))
        if len(numbers) == 1 and _in_range(float(numbers[0].group(1))):
            return Found(float(numbers[0].group(1)), numbers[0].start(1), numbers[0].end(1))
    return None


_LABEL = r"(?:assistant|answer|response)\s*[\(\[]?\s*({tag})\s*[\)\]]?"


def _labelled_score(tag: str, separator: str) -> re.Pattern:
    """'Assistant 1: 8', 'Answer B - 7/10', '**Response 2 score** 6' ..."""
    return re.compile(
        r"(?<![\w])[\*_#\s]*" + _LABEL.format(tag=tag) + r"(?:'s)?[\*_\s]*(?:score|rating)?[\*_\s]*"
        + separator + r"[\*_\s]*" + _R + r"(?:\s*/\s*" + DENOMINATOR + r")?(?!\d)",
        re.IGNORECASE,
    )


_LABELLED = {tag: _labelled_score(tag, r"[:=\-]?") for tag in ("1", "2")}
# After a letter label (A/B) a separator is required; after a digit it is optional.
_LABELLED_AB = {tag: _labelled_score(tag, r"[:=\-]") for tag in ("a", "b")}

_DOUBLE_BRACKET_PAIR = re.compile(r"\[\[\s*" + _R + r"\s*[,;/ ]\s*" + _R + r"\s*\]\]")
_PAIR_LINE = re.compile(r"^[^\w\-\u2212]*" + _R + r"\s*(?:[,;/]|\s|and|vs\.?)\s*" + _R + r"\W*$", re.IGNORECASE)


def parse_pair(text: str, *, short_reply: bool = False) -> tuple[Found, Found] | None:
    """Find the two scores (first answer, second answer) that a pairwise
    reply states, never ones it does not state.

    Accepts labelled lines (``Assistant 1: 8`` / ``Assistant 2: 6``, also
    ``Answer 1 score: 8/10``, ``**Assistant A**: 8``), ``[[8, 6]]``, and a
    line holding just the two numbers (``8 6``, ``8, 6``) as the first or
    the last line; each rule decides by its last match, and a stated score
    outside 1-10 is a parse failure. Scales and ranges are never scores (as
    in :func:`parse_rating`). With ``short_reply`` a reply holding exactly
    two numbers from 1 to 10 gives them as a last resort.
    """
    if not text:
        return None
    masked = mask_scales(text)
    for table in (_LABELLED, _LABELLED_AB):
        pair = [_last(pattern, masked, group=2) for pattern in table.values()]
        if pair[0] is False or pair[1] is False:
            return None
        if pair[0] is not None and pair[1] is not None:
            return pair[0], pair[1]
    bracketed = None
    for match in _DOUBLE_BRACKET_PAIR.finditer(masked):
        bracketed = match
    if bracketed is not None:
        a, b = float(bracketed.group(1)), float(bracketed.group(2))
        if not (_in_range(a) and _in_range(b)):
            return None
        return Found(a, bracketed.start(1), bracketed.end(1)), Found(b, bracketed.start(2), bracketed.end(2))
    lines = [(m.start(), m.group(0)) for m in re.finditer(r"[^\n]+", masked) if m.group(0).strip()]
    for offset, line in ([lines[0], lines[-1]] if lines else []):
        match = _PAIR_LINE.match(line)
        if match:
            a, b = float(match.group(1)), float(match.group(2))
            if not (_in_range(a) and _in_range(b)):
                return None
            return (
                Found(a, offset + match.start(1), offset + match.end(1)),
                Found(b, offset + match.start(2), offset + match.end(2)),
            )
    if short_reply:
        numbers = list(_ANY_NUMBER.finditer(masked))
        if len(numbers) == 2 and all(_in_range(float(m.group(1))) for m in numbers):
            a, b = numbers
            return Found(float(a.group(1)), a.start(1), a.end(1)), Found(float(b.group(1)), b.start(1), b.end(1))
    return None


# --------------------------------------------------------------------------
# Scores from token logprobs

_SCORE_TOKEN = re.compile(r"^(10|[1-9])$")
_PIECE_MARKS = str.maketrans({"\u2581": " ", "\u0120": " ", "\u010a": "\n"})  # sentencepiece / byte-level marks


def clean_token(token: str) -> str:
    """A token as text: sentencepiece/byte-level space marks become spaces."""
    return token.translate(_PIECE_MARKS)


def _token_value(token: str) -> int | None:
    match = _SCORE_TOKEN.match(clean_token(token).strip())
    return int(match.group(1)) if match else None


def _alternatives(entry: TokenLogprob) -> list[tuple[str, float]]:
    return list(entry.top) if entry.top else [(entry.token, entry.logprob)]


def digit_distribution(logprobs: Sequence[TokenLogprob], index: int) -> dict[int, float]:
    """Probability (unnormalised) of each score 1..10 at token ``index``.

    Candidates are the top alternatives that are a score on their own
    (``"7"``, ``" 7"``, ``"10"``). A ``"1"`` may be the start of ``"10"``:
    when the token chosen at ``index`` is ``"1"`` and a next token exists,
    the mass of ``"1"`` is split by the probability of ``"0"`` at the next
    position (the model's own continuation). When ``"1"`` is only an
    alternative, its continuation is unknown and it counts as 1.
    """
    entry = logprobs[index]
    dist: dict[int, float] = {}
    for token, logprob in _alternatives(entry):
        value = _token_value(token)
        if value is not None and logprob is not None and math.isfinite(logprob):
            dist[value] = dist.get(value, 0.0) + math.exp(logprob)
    if dist.get(1) and _token_value(entry.token) == 1 and index + 1 < len(logprobs):
        nxt = logprobs[index + 1]
        p_zero = sum(
            math.exp(lp)
            for tok, lp in _alternatives(nxt)
            if lp is not None and clean_token(tok).startswith("0") and not clean_token(tok)[1:2].isdigit()
        )
        p_zero = min(max(p_zero, 0.0), 1.0)
        p_one = dist.pop(1)
        dist[10] = dist.get(10, 0.0) + p_one * p_zero
        if p_one * (1 - p_zero) > 0:
            dist[1] = p_one * (1 - p_zero)
    return dist


def expected_value(dist: dict[int, float]) -> float | None:
    """Mean of a score distribution, normalised over its candidates."""
    total = sum(dist.values())
    if total <= 0:
        return None
    return sum(value * p for value, p in dist.items()) / total


def expected_score(logprobs: Sequence[TokenLogprob], index: int) -> float | None:
    """The 1-10 score at token ``index`` as an expected value over the digit
    candidates (``None`` when no candidate is a score)."""
    if not 0 <= index < len(logprobs):
        return None
    return expected_value(digit_distribution(logprobs, index))


def logprob_text(logprobs: Sequence[TokenLogprob]) -> tuple[str, list[int]]:
    """The text the tokens spell, and the character offset where each starts."""
    starts, parts, pos = [], [], 0
    for entry in logprobs:
        piece = clean_token(entry.token)
        starts.append(pos)
        parts.append(piece)
        pos += len(piece)
    return "".join(parts), starts


def token_at(starts: Sequence[int], char_pos: int) -> int:
    """Index of the token whose span holds character ``char_pos``."""
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= char_pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


def scores_from_logprobs(
    completion: Completion, find: Callable[[str], Sequence[Found] | None]
) -> list[float] | None:
    """Read the scores that ``find`` locates in the completion's tokens as
    expected values over digit logprobs. ``None`` when the completion has no
    logprobs, ``find`` finds nothing, or a position has no digit candidate.
    """
    if not completion.logprobs:
        return None
    text, starts = logprob_text(completion.logprobs)
    found = find(text)
    if not found:
        return None
    out = []
    for item in found:
        value = expected_score(completion.logprobs, token_at(starts, item.start))
        if value is None:
            return None
        out.append(value)
    return out


# --------------------------------------------------------------------------
# Generation parameters from judge options


def judge_params(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> GenerationParams:
    """GenerationParams from a judge's defaults and the user's ``params``
    option (kept for plugins; built-in components declare ``params`` as
    :class:`tapir.options.GenerationOverrides`); a wrong name or value is a
    :class:`~tapir.errors.ConfigError`."""
    from tapir.options import GenerationOverrides, validate

    return validate(GenerationOverrides, overrides, "params").apply(defaults)


# --------------------------------------------------------------------------
# One call, then one nudge round

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What one judge prompt produced after at most one nudge retry."""

    value: T | None = None
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    retried: bool = False
    completion: Completion | None = None  # the completion the value came from

    @property
    def ok(self) -> bool:
        return self.error is None


def _with_nudge(messages: list[Message], bad_text: str, nudge: str) -> list[Message]:
    return [*messages, {"role": "assistant", "content": bad_text}, {"role": "user", "content": nudge}]


def run_with_retry(
    backend: Any,
    prompts: Sequence[list[Message]],
    params: GenerationParams,
    parse: Callable[[Completion], T | None],
    nudge: str | Callable[[int], str],
    *,
    what: str = "score",
    samples: Sequence[int] | None = None,
    metas: Sequence[dict[str, Any]] | None = None,
) -> list[Outcome[T]]:
    """Send every prompt in ONE ``backend.generate`` call, parse each reply,
    and re-ask the unparseable ones in ONE more call, each with its bad reply
    and a ``nudge`` message restating the format appended (a new prompt, so a
    new cache key). A reply still unparseable becomes ``error="parse: ..."``
    with every raw text kept; a backend failure becomes ``"backend: ..."``
    (and is not nudged: a re-run asks again, failures are not cached).

    ``samples`` gives each prompt its sample index (a repeated judgment is
    another cache key, so the cache does not hand back the same reply);
    ``metas`` what each call is recorded with in ``llm_calls`` (role,
    item_id). The nudge keeps both.
    """

    def request(i: int, messages: list[Message]) -> GenerationRequest:
        return GenerationRequest(messages=messages, params=params, sample=samples[i] if samples else 0,
                                 meta=dict(metas[i]) if metas else {})

    requests = [request(i, list(m)) for i, m in enumerate(prompts)]
    outcomes: list[Outcome[T]] = [Outcome() for _ in prompts]
    retry: list[int] = []
    for i, completion in enumerate(backend.generate(requests) if requests else []):
        out = outcomes[i]
        if completion.error is not None:
            out.error = f"backend: {completion.error}"
            continue
        out.raw.append(completion.text)
        value = parse(completion)
        if value is None:
            retry.append(i)
        else:
            out.value, out.completion = value, completion
    if retry:
        nudged = [
            request(i, _with_nudge(list(prompts[i]), outcomes[i].raw[0], nudge(i) if callable(nudge) else nudge))
            for i in retry
        ]
        for i, completion in zip(retry, backend.generate(nudged)):
            out = outcomes[i]
            out.retried = True
            if completion.error is not None:
                out.error = f"backend: {completion.error} (on the retry after an unparseable reply)"
                continue
            out.raw.append(completion.text)
            value = parse(completion)
            if value is None:
                out.error = f"parse: no {what} found in the judge's reply, also after one retry with a nudge"
            else:
                out.value, out.completion = value, completion
    return outcomes


# --------------------------------------------------------------------------
# Combining and counting


def average_orders(
    first: tuple[float, float] | None, second: tuple[float, float] | None
) -> tuple[tuple[float, float] | None, int]:
    """Average the (a, b) scores from the two presentation orders.

    ``second`` must already be mapped back to (a, b). Returns the scores and
    how many orders were used (2, 1 when only one parsed, 0 when none).
    """
    got = [s for s in (first, second) if s is not None]
    if not got:
        return None, 0
    return (sum(s[0] for s in got) / len(got), sum(s[1] for s in got) / len(got)), len(got)


def combine_errors(errors: Iterable[str | None]) -> str | None:
    """One error for a judgment built from several prompts: a backend error
    wins (a re-run may fix it), else the parse error."""
    errs = [e for e in errors if e]
    if not errs:
        return None
    backend = [e for e in errs if e.startswith("backend:")]
    return (backend or errs)[0]


def judge_meta(request: Any) -> dict[str, Any]:
    """What a judge's call for ``request`` (a JudgeRequest) is recorded with
    in ``llm_calls``: the role and the item."""
    return {"role": "judge", "item_id": request.item_id}


def summarize(judgments: Sequence[Judgment]) -> dict[str, int]:
    """Counts for a batch: ``n``, ``ok``, ``failed`` and ``retried`` (the
    nudge was used, whether or not it helped)."""
    return {
        "n": len(judgments),
        "ok": sum(1 for j in judgments if j.error is None),
        "failed": sum(1 for j in judgments if j.error is not None),
        "retried": sum(1 for j in judgments if j.details.get("retried")),
    }


__all__ = [
    "Found",
    "Outcome",
    "average_orders",
    "clean_token",
    "combine_errors",
    "mask_scales",
    "digit_distribution",
    "expected_score",
    "expected_value",
    "judge_meta",
    "judge_params",
    "logprob_text",
    "parse_pair",
    "parse_rating",
    "run_with_retry",
    "scores_from_logprobs",
    "summarize",
    "token_at",
]
