"""Task-aware rewriting, training sets with alpha weights, and training
rounds with checkpoints recorded in the store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from tapir import progress
from tapir.pipeline.context import Context
from tapir.roles import Item, TrainExample
from tapir.store.db import dumps, utcnow


def with_teacher_answers(ctx: Context, items: Sequence[Item], round: int) -> list[Item]:
    """Items with their teacher answer (from any round up to ``round``)."""
    answers = ctx.teacher_responses(round)
    return [replace(it, output=answers[it.id]["text"]) for it in items if it.id in answers]


def rewrite(ctx: Context, items: Sequence[Item], round: int, info: dict) -> None:
    """Rewrite every item (with its teacher answer) not rewritten yet in this
    round; the result is a new item (origin 'rewritten') linked in rewrites."""
    if ctx.rewriter is None:
        info["skipped"] = "no rewriter configured"
        return
    name = ctx.config.rewriter.name
    done = {
        r[0]
        for r in ctx.store.execute(
            "select item_id from rewrites where run_id = ? and rewriter = ? and round = ?", [ctx.run.id, name, round]
        ).fetchall()
    }
    todo = [it for it in items if it.id not in done]
    failed = 0
    with progress.bar(f"rewriting (round {round})", len(todo)) as bar:
        chunk = 64
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            results = ctx.rewriter.rewrite(part)
            for it, new in zip(part, results):
                if new is None:
                    failed += 1
                    continue
                ctx.add_items([new], "rewritten", round)
                with ctx.store.db.conn:
                    ctx.store["rewrites"].insert(
                        {"run_id": ctx.run.id, "item_id": it.id, "new_item_id": new.id, "rewriter": name,
                         "round": round, "created_at": utcnow()},
                        ignore=True,
                    )
            bar.update(len(part))
    info.update(rewritten=len(todo) - failed, failed=failed, already=len(done))


def rewritten_versions(ctx: Context, items: Sequence[Item]) -> list[Item]:
    """Each item replaced by its latest rewrite when there is one."""
    rows = ctx.store.execute(
        "select item_id, new_item_id from rewrites where run_id = ? order by round", [ctx.run.id]
    ).fetchall()
    latest = dict(rows)
    rewritten = {it.id: it for it in ctx.items("origin = 'rewritten'")}
    return [rewritten.get(latest.get(it.id), it) for it in items]


def alpha_for(round: int, alpha: float, step: float) -> float:
    """alpha_r = alpha + (r - 1) * step, kept within [0, 1]."""
    return min(1.0, max(0.0, alpha + (round - 1) * step))


def weighted_examples(hard: Sequence[Item], easy: Sequence[Item], alpha: float) -> list[TrainExample]:
    """Hard items share ``alpha`` of the total weight, easy ones ``1 - alpha``;
    weights average 1 over the set. With one group empty, the other gets all."""
    n = len(hard) + len(easy)
    if not hard or not easy:
        share_hard = 1.0 if hard else 0.0
    else:
        share_hard = alpha
    out = []
    for group, share in ((hard, share_hard), (easy, 1.0 - share_hard)):
        if not group:
            continue
        w = share * n / len(group)
        out.extend(TrainExample([{"role": "user", "content": it.prompt}], it.output, w) for it in group)
    return out


def train(ctx: Context, base: str, examples: Sequence[TrainExample], round: int, info: dict) -> str:
    """Train a round and record the checkpoint; returns the checkpoint folder."""
    out = ctx.out_dir / "checkpoints" / f"round-{round}"
    progress.say(f"   training round {round} on {len(examples)} examples from {base}")
    metrics = ctx.trainer.train(base, list(examples), str(out))
    with ctx.store.db.conn:
        ctx.store["checkpoints"].insert(
            {
                "run_id": ctx.run.id,
                "round": round,
                "path": str(out.resolve()),
                "base_model": ctx.config.student.model,
                "trainer": ctx.config.trainer.name,
                "metrics": dumps(metrics),
                "created_at": utcnow(),
            },
            replace=True,
        )
    info.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    info["examples"] = len(examples)
    return str(out.resolve())


def checkpoint(ctx: Context, round: int) -> str | None:
    rows = ctx.store.execute(
        "select path from checkpoints where run_id = ? and round = ?", [ctx.run.id, round]
    ).fetchall()
    if rows and Path(rows[0][0]).exists():
        return rows[0][0]
    return None
