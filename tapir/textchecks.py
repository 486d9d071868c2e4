"""Checks of generated text that tell a usable reply from a broken one,
without a model: a reply that loops, a "refined instruction" that is an
answer, a refinement that drifts from the instruction it refines.

Each returns ``None`` (fine) or the reason, a sentence a person can read;
the rewriter fails the rewrite with it (the original is kept) and the answer
stages count and flag looping answers."""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z0-9_']+|[^\sA-Za-z0-9_']")
_CONTENT = re.compile(r"[A-Za-z][A-Za-z0-9']{3,}")
# The first words of a reply that answers or talks instead of instructing.
_ANSWER_OPENERS = re.compile(
    r"^\W*(?:hello|hi|hey|greetings|dear|sure|certainly|of course|absolutely|gladly|okay|ok|great|thank you|thanks"
    r"|here(?:'s| is| are)|i(?:'m| am|'ll| will| would| can|'d| have)|as an ai|my name is|yes|no"
    r"|the answer is|answer\s*:|response\s*:)(?![A-Za-z])", re.I)
_STOPWORDS = frozenset("""
about above after again against also another because been before being below between both could does doing
down during each even every from further have having here into itself just like make more most much must only
other over same should some such than that their them then there these they this those through under until very
what when where which while whom with would your yours write please give explain describe provide following
using given need needs want""".split())


def repeats_itself(text: str, *, n: int = 4, min_words: int = 40, max_repeat_share: float = 0.5) -> str | None:
    """The text loops: over half of its word ``n``-grams are repeats (a
    generation stuck in a cycle), or one line of 20+ characters appears 3+
    times."""
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 20]
    if lines:
        top = max(set(lines), key=lines.count)
        if lines.count(top) >= 3:
            return f"the text repeats the line {top[:60]!r} {lines.count(top)} times"
    words = _WORD.findall(text.lower())
    if len(words) < min_words:
        return None
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    repeated = 1 - len(set(grams)) / len(grams)
    if repeated > max_repeat_share:
        return f"the text loops: {repeated:.0%} of its {n}-word sequences are repeats"
    return None


def reads_as_answer(refined: str, original: str = "") -> str | None:
    """A "refined instruction" that greets, agrees or speaks as the assistant
    ("Hello. I'm a business writer...") is an answer, not an instruction;
    unless the original opens the same way (a user may write "I am planning
    a trip...")."""
    match = _ANSWER_OPENERS.match(refined)
    if match and not _ANSWER_OPENERS.match(original):
        return f"the refinement reads as an answer, not an instruction (it opens with {match.group(0).strip()!r})"
    return None


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _CONTENT.findall(text)} - _STOPWORDS


def drifts_from(refined: str, original: str, *, min_overlap: float) -> str | None:
    """A refinement that keeps under ``min_overlap`` of the original's content
    words (4+ letters, not stop words) is about something else. Originals
    with fewer than 3 content words are not judged."""
    wanted = content_words(original)
    if len(wanted) < 3 or min_overlap <= 0:
        return None
    kept = wanted & content_words(refined)
    share = len(kept) / len(wanted)
    if share < min_overlap:
        return (f"the refinement drifts from the original: it keeps {len(kept)} of its {len(wanted)} content words "
                f"({share:.0%}, below {min_overlap:.0%})")
    return None
