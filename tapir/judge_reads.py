"""How a judgment was read, and what a judge stage's judgments say about it.

A score can come from the judge's token logprobs, from the format's own
parser, from tapir's lenient parser, or from the lenient parser as a
fallback when the chosen reader could not be used (:data:`READ_METHODS`,
best first). The judges record which per judgment (``read_by``); this
module combines reads (:func:`weakest_read`), counts them
(:func:`count_read_by`, :func:`judgment_provenance`), says them in one line
(:func:`provenance_text`) and warns once when logprobs were asked for and
did not come (:func:`warn_missing_logprobs`). Parsing the scores themselves
is :mod:`tapir.judging`.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from tapir.roles import Judgment


READ_LOGPROBS = "logprobs"  # expected value over the score tokens' logprobs
READ_REFERENCE = "reference parser"  # the format's own parser (FastChat's [[n]], the paper's Table 8 lines)
READ_LENIENT = "lenient parser"  # tapir's lenient text parser, where it is the judge's chosen reader
READ_FALLBACK = "lenient fallback"  # the text, read because the chosen reader could not be used
READ_METHODS = (READ_LOGPROBS, READ_REFERENCE, READ_LENIENT, READ_FALLBACK)  # best first


def weakest_read(methods: Iterable[str | None]) -> str | None:
    """The weakest of several reads (a judgment built from two orders is as
    weak as its weaker order): later in :data:`READ_METHODS` is weaker."""
    known = [m for m in methods if m]
    if not known:
        return None
    return max(known, key=lambda m: READ_METHODS.index(m) if m in READ_METHODS else len(READ_METHODS))


def count_read_by(judgments: Iterable[Any]) -> dict[str, int]:
    """How many judgments were read by each method, over any set of
    judgments: :class:`Judgment` objects (``details["read_by"]``), rows or
    dicts with a ``read_by`` key (the ``judgments.read_by`` column), or the
    method strings themselves. Judgments with no read method (failed, or
    from a judge that reads no text, such as reference-similarity) are not
    counted. Known methods come first, in :data:`READ_METHODS` order."""
    counts: dict[str, int] = {}
    for j in judgments:
        if isinstance(j, Judgment):
            method = j.details.get("read_by")
        elif isinstance(j, str) or j is None:
            method = j
        else:
            method = j["read_by"]
        if method:
            counts[method] = counts.get(method, 0) + 1
    order = {m: i for i, m in enumerate(READ_METHODS)}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def judgment_provenance(store: Any, scope: str) -> dict[str, Any]:
    """For the ok judgments stored under ``scope`` (a stage key or a
    benchmark run id): ``read_by``, how many were read by each method
    (:func:`count_read_by` over the ``judgments.read_by`` column);
    ``logprobs_missing``, how many came without the logprobs their judge
    asked for (when any did); ``mean_mfd_spread``, with ``judge_repeats``,
    the mean over items of the MFD's standard deviation over the repeats.
    Read from the store, so a resumed stage counts every judgment it holds.
    ``store`` is anything with ``execute(sql, params)``."""
    from tapir.store.judgments import provenance_rows

    rows = provenance_rows(store, scope)
    out: dict = {"read_by": count_read_by(r[0] for r in rows)}
    missing = sum(1 for r in rows if r[1])
    if missing:
        out["logprobs_missing"] = missing
    spreads = [r[2] for r in rows if r[2] is not None]
    if spreads:
        out["mean_mfd_spread"] = round(sum(spreads) / len(spreads), 4)
    return out


def provenance_text(info: dict[str, Any]) -> str | None:
    """A judge stage's :func:`judgment_provenance` (kept in its info) as one
    line for people: ``read by reference parser 30, lenient fallback 2; 2
    without the logprobs asked for; mean MFD spread 0.41``. ``None`` when
    the info holds no read counts (a judge that reads no text)."""
    counts = info.get("read_by") or {}
    if not counts:
        return None
    parts = ["read by " + ", ".join(f"{method} {n}" for method, n in counts.items())]
    if info.get("logprobs_missing"):
        parts.append(f"{info['logprobs_missing']} without the logprobs asked for")
    if info.get("mean_mfd_spread") is not None:
        parts.append(f"mean MFD spread {info['mean_mfd_spread']:.3g} over judge_repeats")
    return "; ".join(parts)


_warned_missing_logprobs: set[tuple[str, str]] = set()
_log = logging.getLogger("tapir.judge_reads")


def warn_missing_logprobs(judge: str, model: str, missing: int, total: int) -> bool:
    """A logprob judge whose backend accepted ``logprobs`` and answered
    without them (FastChat's server does) reads the text instead: say so
    once per (judge, model) in the process (a run), on the log (stderr),
    instead of silently. True when this call warned."""
    if missing <= 0 or (judge, model) in _warned_missing_logprobs:
        return False
    _warned_missing_logprobs.add((judge, model))
    _log.warning(
        "judge '%s': %d of %d replies from %s came without logprobs although they were asked for; "
        "those scores are read from the text (read_by 'lenient fallback'). Serve the judge where "
        "logprobs work (vLLM, OpenAI), or set use_logprobs: false to make text parsing the choice.",
        judge, missing, total, model)
    return True
