"""MT-Bench scores from stored judgments, as FastChat's ``show_result``
reports them: the mean over judged answers, per turn, per category and
overall. A failed judgment is counted and left out, never scored 0.

Pairwise mode follows FastChat's pairwise-baseline display: a question-turn
is a win or a loss only when both presentation orders agree; a tie in
either order, or two orders that disagree ("inconsistent"), is a tie.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence


def mean_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (sample std / sqrt(n))."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def row(task: str, metric: str, values: Sequence[float], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    mean, stderr = mean_stderr(values)
    return {"task": task, "metric": metric, "value": mean, "stderr": stderr, "n": len(values), "meta": meta or {}}


def single_rows(graded: Iterable[tuple[str, int, float | None]], categories: Sequence[str],
                meta: dict[str, Any] | None = None,
                category_failures: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows from ``(category, turn, score or None for a failure)`` triples.

    ``overall`` (both turns), ``turn1``, ``turn2``, ``category/<name>`` (both
    turns), metric ``score``; ``judge`` metric ``failures`` (n = judgments
    attempted). Every category of ``categories`` (those of the questions
    run) has a row: one without a scored answer has value None and
    ``meta.failed`` true; ``meta.category_failures`` counts the category's
    answers or judgments that failed (``category_failures``).
    """
    overall: list[float] = []
    by_turn: dict[int, list[float]] = defaultdict(list)
    by_cat: dict[str, list[float]] = defaultdict(list)
    by_cat_turn: dict[tuple[str, int], list[float]] = defaultdict(list)
    failures = attempted = 0
    for category, turn, score in graded:
        attempted += 1
        if score is None:
            failures += 1
            continue
        overall.append(score)
        by_turn[turn].append(score)
        by_cat[category].append(score)
        by_cat_turn[(category, turn)].append(score)
    meta = meta or {}
    rows = [row("overall", "score", overall, meta)]
    for turn in sorted(by_turn):
        rows.append(row(f"turn{turn}", "score", by_turn[turn], meta))
    for category in categories:
        failed_here = (category_failures or {}).get(category, 0)
        per_turn = {f"turn{t}": mean_stderr(by_cat_turn[(category, t)])[0] for t in (1, 2)}
        extra = {"per_turn": per_turn, "category_failures": failed_here}
        if category not in by_cat:
            extra["failed"] = True  # nothing scored: shown as failed, never left out
        rows.append(row(f"category/{category}", "score", by_cat.get(category, []), {**meta, **extra}))
    rows.append({"task": "judge", "metric": "failures", "value": float(failures), "stderr": None, "n": attempted,
                 "meta": {**meta, "excluded": failures}})
    return rows


def verdict(model_score: float, baseline_score: float) -> str:
    """``win``, ``loss`` or ``tie`` for the model in one order."""
    if model_score > baseline_score:
        return "win"
    if model_score < baseline_score:
        return "loss"
    return "tie"


def combine_orders(first: str | None, second: str | None) -> str:
    """One question-turn's outcome from its two orders' verdicts:
    ``error`` when either order failed, ``inconsistent`` when they
    disagree, else the shared verdict."""
    if first is None or second is None:
        return "error"
    if first != second:
        return "inconsistent"
    return first


_VALUE = {"win": 1.0, "loss": 0.0, "tie": 0.5, "inconsistent": 0.5}


def pairwise_rows(outcomes: Iterable[tuple[str, int, str]], prefix: str = "pairwise",
                  meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows from ``(category, turn, outcome)``: win rate (wins / n), loss
    rate, and the adjusted win rate (a tie or inconsistent verdict counts
    half), overall, per turn and per category; counts of inconsistent
    verdicts and failures under ``<prefix>/judge``."""
    groups: dict[str, list[str]] = defaultdict(list)
    failures = inconsistent = attempted = 0
    for category, turn, outcome in outcomes:
        attempted += 1
        if outcome == "error":
            failures += 1
            continue
        if outcome == "inconsistent":
            inconsistent += 1
        for key in ("overall", f"turn{turn}", f"category/{category}"):
            groups[key].append(outcome)
    rows = []
    for key in sorted(groups, key=lambda k: (k != "overall", not k.startswith("turn"), k)):
        results = groups[key]
        counts = {o: results.count(o) for o in ("win", "loss", "tie", "inconsistent")}
        task = f"{prefix}/{key}"
        meta = meta or {}
        rows.append(row(task, "win_rate_adjusted", [_VALUE[o] for o in results], {**meta, **counts}))
        rows.append(row(task, "win_rate", [1.0 if o == "win" else 0.0 for o in results], {**meta, "primary": False}))
        rows.append(row(task, "loss_rate", [1.0 if o == "loss" else 0.0 for o in results],
                        {**meta, "primary": False}))
    meta = meta or {}
    rows.append({"task": f"{prefix}/judge", "metric": "inconsistent", "value": float(inconsistent), "stderr": None,
                 "n": attempted - failures, "meta": {**meta, "primary": False}})
    rows.append({"task": f"{prefix}/judge", "metric": "failures", "value": float(failures), "stderr": None,
                 "n": attempted, "meta": {**meta, "excluded": failures}})
    return rows
