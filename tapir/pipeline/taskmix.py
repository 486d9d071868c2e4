"""Task classification and task-aware re-sampling of the hard seed set."""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

from tapir import progress
from tapir.pipeline.context import Context
from tapir.roles import Item
from tapir.store.db import utcnow
from tapir.tasks import TASK_TYPES, paper_weights, uniform_weights


def classify(ctx: Context, items: Sequence[Item], info: dict) -> None:
    """Label every item without a classification; items.task_type takes the label."""
    name = ctx.config.classifier.name
    done = {
        r[0]
        for r in ctx.store.execute(
            "select item_id from classifications where run_id = ? and classifier = ?", [ctx.run.id, name]
        ).fetchall()
    }
    todo = [it for it in items if it.id not in done]
    if todo:
        with progress.bar("classifying task types", len(todo)) as bar:
            labels = ctx.classifier.classify([it.prompt for it in todo])
            bar.update(len(todo))
        with ctx.store.db.conn:
            for it, (label, confidence) in zip(todo, labels):
                ctx.store["classifications"].insert(
                    {"run_id": ctx.run.id, "item_id": it.id, "classifier": name, "label": label,
                     "confidence": confidence, "created_at": utcnow()},
                    replace=True,
                )
    with ctx.store.db.conn:
        ctx.store.execute(
            "update items set task_type = (select label from classifications c where c.run_id = items.run_id "
            "and c.item_id = items.id and c.classifier = ?) where run_id = ? and origin = 'seed'",
            [name, ctx.run.id],
        )
    rows = ctx.store.execute(
        "select label, count(*) from classifications where run_id = ? and classifier = ? group by label",
        [ctx.run.id, name],
    ).fetchall()
    info.update(classified=len(todo), counts=dict(sorted(rows, key=lambda r: -r[1])))
    # Agreement with labels that came with the data, when there are any.
    given = [(it.meta.get("dataset_task_type"), it.id) for it in items if it.meta.get("dataset_task_type")]
    if given:
        labels_now = dict(
            ctx.store.execute(
                "select item_id, label from classifications where run_id = ? and classifier = ?", [ctx.run.id, name]
            ).fetchall()
        )
        agree = sum(1 for label, iid in given if labels_now.get(iid) == label)
        info["agreement_with_dataset_labels"] = round(agree / len(given), 4)


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


def record_resample(ctx: Context, draws: Sequence[Item], pool: Sequence[Item], round_: int,
                    weights: dict[str, float], info: dict) -> None:
    """Make over- and under-sampling explicit: a 'draws' score per pool item
    and per-type counts against the pool in the stage info."""
    per_item = Counter(it.id for it in draws)
    with ctx.store.db.conn:
        for it in pool:
            ctx.set_score(it.id, "draws", round_, float(per_item.get(it.id, 0)))
    drawn = Counter(it.task_type or "Others" for it in draws)
    available = Counter(it.task_type or "Others" for it in pool)
    info["per_task"] = {
        t: {
            "pool": available[t],
            "drawn": drawn[t],
            "share": round(drawn[t] / max(1, len(draws)), 4),
            "weight": round(weights.get(t, 0.0), 4),
            "sampling": "over" if drawn[t] > available[t] else ("under" if drawn[t] < available[t] else "all"),
        }
        for t in TASK_TYPES
        if available[t] or drawn[t]
    }
    info["draws"] = len(draws)
