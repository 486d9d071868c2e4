"""Model Fitting Difficulty: its distribution, the cut that makes the hard
seed set D_S, and a text histogram (the judge stage is stages/judge.py)."""

from __future__ import annotations

import statistics
from typing import Sequence

from tapir.config import MFDConfig


def distribution(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0}
    qs = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "q1": round(qs[0], 4),
        "median": round(qs[1], 4),
        "q3": round(qs[2], 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def select_hard(mfd: dict[str, float], cfg: MFDConfig) -> tuple[set[str], float, str]:
    """The hard seed set D_S and the threshold used.

    ``top_fraction`` keeps the highest-MFD fraction, ``quantile`` keeps MFD
    above that quantile, otherwise the paper's absolute ``delta``: MFD > delta.
    Ties are broken by item id so the cut is deterministic.
    """
    if not mfd:
        return set(), float("nan"), "empty"
    ranked = sorted(mfd.items(), key=lambda kv: (-kv[1], kv[0]))
    if cfg.top_fraction is not None:
        k = max(1, round(cfg.top_fraction * len(ranked)))
        chosen = ranked[:k]
        return {i for i, _ in chosen}, chosen[-1][1], f"top {cfg.top_fraction:.0%}"
    if cfg.quantile is not None:
        values = sorted(mfd.values())
        threshold = _quantile(values, cfg.quantile)
        return {i for i, v in mfd.items() if v > threshold}, threshold, f"MFD > q{cfg.quantile:g}"
    delta = cfg.delta if cfg.delta is not None else 2.0
    return {i for i, v in mfd.items() if v > delta}, delta, f"MFD > {delta:g}"


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def histogram(values: Sequence[float], bins: int = 10, width: int = 40) -> str:
    """A text histogram for the terminal."""
    if not values:
        return "(no MFD scores)"
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    top = max(counts)
    lines = []
    for b, c in enumerate(counts):
        left = lo + b * step
        lines.append(f"{left:8.2f} .. {left + step:8.2f} | {'#' * round(width * c / top):<{width}} {c}")
    return "\n".join(lines)
