"""Model Fitting Difficulty: its distribution, the cut that makes the hard
seed set D_S, and a text histogram (the judge stage is stages/judge.py)."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Sequence

from tapir.config.schema import MFDConfig


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


@dataclass
class Cut:
    """What a seed cut did: the hard set D_S and how it was reached.

    ``threshold`` is the cut value: ``delta`` (or the quantile's value) for
    an absolute cut, the lowest MFD taken for a relative cut or a cap.
    ``at_cut`` items share the cut value where the cut fell inside a run of
    equal values; ``taken_at_cut`` of them were taken, chosen by a seeded
    draw (never by id). ``excluded_nonpositive`` items the rule would have
    taken were left out because their MFD is <= 0 (``mfd.allow_nonpositive``).
    """

    hard: set[str]
    rule: str
    threshold: float
    judged: int
    at_cut: int = 0
    taken_at_cut: int = 0
    excluded_nonpositive: int = 0
    capped_at: int | None = None

    @property
    def tie_break(self) -> str:
        return "seeded draw" if self.taken_at_cut < self.at_cut else "none"

    def info(self) -> dict:
        return {"rule": self.rule, "threshold": self.threshold, "judged": self.judged, "hard": len(self.hard),
                "easy": self.judged - len(self.hard), "at_cut": self.at_cut, "taken_at_cut": self.taken_at_cut,
                "tie_break": self.tie_break, "excluded_nonpositive": self.excluded_nonpositive,
                "capped_at": self.capped_at}


def describe_cut(info: dict) -> str:
    """One line for a seed cut's stage info (Cut.info()): selected, ties at
    the cut value and how they were broken, exclusions for MFD <= 0."""
    if not info or "hard" not in info:
        return ""
    judged = info.get("judged", info.get("hard", 0) + info.get("easy", 0))
    text = f"{info['hard']} of {judged} judged items ({info.get('rule', '?')})"
    threshold = info.get("threshold")
    if info.get("at_cut"):
        value = f"{threshold:.4g}" if isinstance(threshold, (int, float)) else "?"
        text += (f"; {info['at_cut']} items share the cut value {value}, {info.get('taken_at_cut', 0)} of them taken"
                 + (" by a seeded draw" if info.get("taken_at_cut", 0) < info["at_cut"] else ""))
    if info.get("excluded_nonpositive"):
        text += (f"; {info['excluded_nonpositive']} excluded for MFD <= 0 (mfd.allow_nonpositive: true would "
                 f"take them)")
    return text


def _draw_rng(seed: int) -> random.Random:
    return random.Random(f"seed_cut:{seed}")


def _take_top(pool: dict[str, float], k: int, rng: random.Random) -> tuple[set[str], float, int, int]:
    """The ``k`` highest of ``pool``: (taken, cut value, items at the cut
    value, taken among those). Ties at the cut value are broken by a seeded
    draw over the tied items in id order."""
    ranked = sorted(pool.values(), reverse=True)
    k = min(k, len(ranked))
    if k <= 0:
        return set(), float("nan"), 0, 0
    value = ranked[k - 1]
    above = {i for i, v in pool.items() if v > value}
    tied = sorted(i for i, v in pool.items() if v == value)
    need = k - len(above)
    taken = above | set(rng.sample(tied, need) if need < len(tied) else tied)
    return taken, value, (len(tied) if need < len(tied) else 0), (need if need < len(tied) else 0)


def select_hard(mfd: dict[str, float], cfg: MFDConfig, seed: int = 0, cap: int | None = None) -> Cut:
    """The hard seed set D_S (:class:`Cut`).

    ``top_fraction`` keeps the highest-MFD fraction of the judged items,
    ``quantile`` keeps MFD above that quantile, otherwise the paper's
    absolute ``delta``: MFD > delta. Items with MFD <= 0 are never hard
    unless ``cfg.allow_nonpositive``. ``cap`` (curriculum.seed_size) keeps
    the highest MFD. Where a cut falls among equal values, the items taken
    are a seeded draw (``seed``), never the first ids.
    """
    n = len(mfd)
    if not mfd:
        return Cut(set(), "empty", float("nan"), 0)
    rng = _draw_rng(seed)
    positive_only = not cfg.allow_nonpositive
    at_cut = taken_at_cut = 0
    if cfg.top_fraction is not None:
        k = max(1, round(cfg.top_fraction * n))
        pool = {i: v for i, v in mfd.items() if v > 0 or not positive_only}
        hard, threshold, at_cut, taken_at_cut = _take_top(pool, k, rng)
        excluded = max(0, k - len(pool)) if positive_only else 0
        rule = f"top {cfg.top_fraction:.0%} of judged items by MFD" + (", MFD > 0 only" if positive_only else "")
    else:
        if cfg.quantile is not None:
            threshold = _quantile(sorted(mfd.values()), cfg.quantile)
            rule = f"MFD > q{cfg.quantile:g} of judged items ({threshold:.4g})"
        else:
            threshold = cfg.delta if cfg.delta is not None else 2.0
            rule = f"MFD > {threshold:g}"
        chosen = {i for i, v in mfd.items() if v > threshold}
        excluded = 0
        if positive_only and threshold < 0:
            excluded = sum(1 for i in chosen if mfd[i] <= 0)
            chosen = {i for i in chosen if mfd[i] > 0}
            rule += ", MFD > 0 only"
        hard = chosen
    capped_at = None
    if cap is not None and len(hard) > cap:
        hard, threshold, at_cut, taken_at_cut = _take_top({i: mfd[i] for i in hard}, cap, rng)
        capped_at = cap
        rule += f", capped at seed_size {cap}"
    return Cut(hard, rule, threshold, n, at_cut, taken_at_cut, excluded, capped_at)


def candidate_deltas(values: Sequence[float], count: int = 6) -> list[float]:
    """Thresholds worth trying on the judge's own scale: evenly spaced from 0
    to the largest MFD (a 1-10 judge gives MFD up to 9; a loss-based judge
    a fraction of that), rounded to 2 significant digits, distinct."""
    top = max(values, default=0.0)
    if top <= 0:
        return [0.0]
    out: list[float] = []
    for k in range(count):
        d = float(f"{top * k / count:.2g}")
        if d not in out:
            out.append(d)
    return out


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
