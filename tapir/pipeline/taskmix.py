"""Task weights and task-aware re-sampling of the hard seed set."""

from __future__ import annotations

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
