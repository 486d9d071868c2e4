"""Task weights, task-aware re-sampling of the hard seed set (stage
resample), and Eq. 3's task mix in a round's training set (stage train):
``task_cover`` (every pair at least once, up-sampled to the mix),
``task_draws`` (one draw with replacement) and the ``coverage`` they reach."""

from __future__ import annotations

import math
import random
from typing import Sequence

from tapir.roles import Item
from tapir.tasks import TASK_TYPES, paper_weights, uniform_weights


def task_weights(setting) -> dict[str, float]:
    if setting == "paper":
        return paper_weights()
    if setting == "uniform":
        return uniform_weights()
    total = sum(setting.values())
    return {t: setting.get(t, 0.0) / total for t in TASK_TYPES}


def allocate(total: int, weights: dict[str, float], available: Sequence[str]) -> dict[str, int]:
    """Split ``total`` draws across the task types present in the pool, in
    proportion to their weights (largest remainder, so counts sum to total)."""
    present = [t for t in TASK_TYPES if t in set(available) and weights.get(t, 0) > 0]
    if not present or total <= 0:
        return {}
    mass = sum(weights[t] for t in present)
    exact = {t: total * weights[t] / mass for t in present}
    counts = {t: int(exact[t]) for t in present}
    rest = total - sum(counts.values())
    for t in sorted(present, key=lambda t: (-(exact[t] - counts[t]), TASK_TYPES.index(t)))[:rest]:
        counts[t] += 1
    return {t: c for t, c in counts.items() if c}


def resample(pool: Sequence[Item], total: int, weights: dict[str, float], seed: int) -> list[Item]:
    """Draw ``total`` seed items by task weights: types with fewer items than
    their share are over-sampled (items repeat), others under-sampled."""
    by_type: dict[str, list[Item]] = {}
    for it in pool:
        by_type.setdefault(it.task_type or "Others", []).append(it)
    counts = allocate(total, weights, list(by_type))
    rng = random.Random(seed)
    draws: list[Item] = []
    for task_type, count in counts.items():
        members = sorted(by_type[task_type], key=lambda it: it.id)
        rng.shuffle(members)
        draws.extend(members[i % len(members)] for i in range(count))
    return draws


# --------------------------------------------------------------------------- Eq. 3 in a round's training set


def _type(it: Item) -> str:
    return it.task_type or "Others"


def _present_weights(items: Sequence[Item], weights: dict[str, float]) -> tuple[dict[str, int], dict[str, float]]:
    """(pairs per task type, the weights renormalised over the types present)."""
    counts: dict[str, int] = {}
    for it in items:
        counts[_type(it)] = counts.get(_type(it), 0) + 1
    mass = sum(weights.get(t, 0.0) for t in counts)
    share = {t: (weights.get(t, 0.0) / mass if mass > 0 else 0.0) for t in counts}
    return counts, share


def cover_counts(counts: dict[str, int], share: dict[str, float], limit: float | None = None) -> dict[str, int]:
    """Examples per task type so that every pair is used at least once and
    the mix follows ``share`` (Eq. 3): the smallest total N with N * share[t]
    >= counts[t] for every weighted type, each type up-sampled to about
    N * share[t]. Types of weight 0 keep their pairs once. With ``limit``,
    N is at most ``limit`` x the pairs available: the types furthest below
    their share are filled first (water-filling), so the mix comes as close
    to Eq. 3 as that budget allows."""
    weighted = {t: n for t, n in counts.items() if share.get(t, 0.0) > 0}
    fixed = sum(n for t, n in counts.items() if t not in weighted)
    if not weighted:
        return dict(counts)
    base = sum(weighted.values())
    need = max(math.ceil(n / share[t] - 1e-9) for t, n in weighted.items())
    total = max(need, base)
    if limit is not None:
        total = max(base, min(total, math.floor(limit * (base + fixed)) - fixed))
    # Water-filling: c_t = max(n_t, level * share_t) with sum c_t = total.
    free = set(weighted)
    while True:
        level = (total - sum(n for t, n in weighted.items() if t not in free)) / sum(share[t] for t in free)
        over = {t for t in free if weighted[t] >= level * share[t]}
        if not over or over == free:
            break
        free -= over
    exact = {t: (max(float(n), level * share[t]) if t in free else float(n)) for t, n in weighted.items()}
    out = {t: max(weighted[t], math.floor(v)) for t, v in exact.items()}
    rest = total - sum(out.values())
    for t in sorted(free, key=lambda t: (-(exact[t] - math.floor(exact[t])), t))[:max(0, rest)]:
        out[t] += 1
    out.update({t: n for t, n in counts.items() if t not in weighted})
    return out


def task_cover(items: Sequence[Item], weights: dict[str, float], seed: int,
               limit: float | None = None) -> list[Item]:
    """Eq. 3 without dropping a pair (``curriculum.sampling: task``): each
    task type's pairs are repeated to reach its share of the round's
    training set (:func:`cover_counts`): every pair q times, and a seeded
    draw without replacement of the pairs that get one more. Absent task
    types give their share to the others."""
    if not items:
        return []
    counts, share = _present_weights(items, weights)
    target = cover_counts(counts, share, limit)
    rng = random.Random(seed)
    by_type: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda it: it.id):
        by_type.setdefault(_type(it), []).append(it)
    out: list[Item] = []
    for t in sorted(by_type, key=lambda t: (TASK_TYPES.index(t) if t in TASK_TYPES else len(TASK_TYPES), t)):
        members = by_type[t]
        q, r = divmod(target[t], len(members))
        out += members * q + rng.sample(members, r)
    return out


def task_draws(items: Sequence[Item], weights: dict[str, float], seed: int) -> list[Item]:
    """Eq. 3 as one draw (``curriculum.sampling: task-draw``): ``len(items)``
    pairs drawn with replacement, each with its task's probability shared
    evenly by the task's items (absent task types give their share to the
    others). Pairs that are never drawn are not trained on."""
    if not items:
        return []
    counts, _ = _present_weights(items, weights)
    p = [weights.get(_type(it), 0.0) / counts[_type(it)] for it in items]
    if sum(p) <= 0:
        return list(items)
    rng = random.Random(seed)
    ordered = sorted(range(len(items)), key=lambda i: items[i].id)
    return [items[i] for i in rng.choices(ordered, weights=[p[i] for i in ordered], k=len(items))]


def coverage(pool: Sequence[Item], trained: Sequence[Item], weights: dict[str, float],
             seeds: set[str] | None = None) -> dict:
    """How much of the hard pool D_P a round trains on: unique pairs used /
    available, in all and per task type (with examples, share and target
    share), and for the MFD-selected seeds D_S among them (``seeds``: their
    ids, which rewritten pairs carry as ``meta["source_id"]``)."""
    counts, share = _present_weights(pool, weights)
    used = {it.id for it in trained}
    examples: dict[str, int] = {}
    used_by: dict[str, set[str]] = {}
    for it in trained:
        examples[_type(it)] = examples.get(_type(it), 0) + 1
        used_by.setdefault(_type(it), set()).add(it.id)
    ids = {it.id for it in pool}
    out = {"available": len(ids), "used": len(used & ids), "examples": len(trained),
           "fraction": round(len(used & ids) / len(ids), 4) if ids else 1.0,
           "per_task": {t: {"available": counts[t], "used": len(used_by.get(t, ())), "examples": examples.get(t, 0),
                            "share": round(examples.get(t, 0) / max(1, len(trained)), 4),
                            "target": round(share.get(t, 0.0), 4)}
                        for t in sorted(counts, key=lambda t: -counts[t])}}
    if seeds is not None:  # a rewritten pair names its seed in meta["source_id"]
        seed_ids = {it.id for it in pool if (it.meta or {}).get("source_id", it.id) in seeds}
        out["seeds_available"] = len(seed_ids)
        out["seeds_used"] = len(seed_ids & used)
    return out
