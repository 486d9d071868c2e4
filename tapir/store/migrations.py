"""Append-only schema migrations, applied in order when a database opens.

Never edit or reorder a migration that has shipped: add a new one.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn):
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations; return the names applied."""
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.conn:
            fn(db)
            db["_migrations"].insert({"name": name, "applied_at": _now(db)})
        applied.append(name)
    return applied


def _now(db) -> str:
    return db.execute("select strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]


@migration
def m001_initial(db: sqlite_utils.Database):
    db["runs"].create(
        {
            "id": str,
            "name": str,
            "config": str,  # JSON, secrets removed
            "config_hash": str,
            "tapir_version": str,
            "status": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["stages"].create(
        {
            "id": int,
            "run_id": str,
            "name": str,
            "round": int,
            "status": str,  # running | done | failed
            "started_at": str,
            "finished_at": str,
            "seconds": float,
            "info": str,  # JSON
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["stages"].create_index(["run_id", "name", "round"], unique=True)

    db["items"].create(
        {
            "run_id": str,
            "id": str,
            "origin": str,  # seed | expanded | rewritten | benchmark
            "round": int,
            "instruction": str,
            "input": str,
            "output": str,
            "task_type": str,
            "meta": str,
        },
        pk=("run_id", "id"),
    )
    db["llm_calls"].create(
        {
            "id": int,
            "key": str,
            "model": str,
            "params": str,
            "messages": str,
            "sample": int,
            "response": str,
            "logprobs": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost": float,
            "latency_s": float,
            "error": str,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )
    db["llm_calls"].create_index(["key"])
    db["responses"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "role": str,  # teacher | student | rewriter | ...
            "model": str,
            "round": int,
            "sample": int,
            "text": str,
            "llm_call_id": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("llm_call_id", "llm_calls", "id")],
    )
    db["responses"].create_index(["run_id", "item_id", "role", "model", "round", "sample"], unique=True)
    db["judgments"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "judge": str,
            "model": str,
            "kind": str,  # pairwise | single | preference | reference | loss
            "position": str,  # ab | ba | single
            "round": int,
            "response_a_id": int,
            "response_b_id": int,
            "score_a": float,
            "score_b": float,
            "preference": float,
            "raw": str,  # the judge's full text(s), JSON list
            "error": str,
            "created_at": str,
        },
        pk="id",
    )
    db["judgments"].create_index(["run_id", "item_id", "judge", "position", "round"], unique=True)
    db["classifications"].create(
        {
            "run_id": str,
            "item_id": str,
            "classifier": str,
            "label": str,
            "confidence": float,
            "created_at": str,
        },
        pk=("run_id", "item_id", "classifier"),
    )
    db["rewrites"].create(
        {
            "run_id": str,
            "item_id": str,
            "new_item_id": str,
            "rewriter": str,
            "round": int,
            "created_at": str,
        },
        pk=("run_id", "item_id", "rewriter", "round"),
    )
    db["checkpoints"].create(
        {
            "id": int,
            "run_id": str,
            "round": int,
            "path": str,
            "base_model": str,
            "trainer": str,
            "metrics": str,
            "created_at": str,
        },
        pk="id",
    )
    db["checkpoints"].create_index(["run_id", "round"], unique=True)
    db["scores"].create(
        {
            "run_id": str,
            "item_id": str,
            "name": str,  # mfd | teacher_score | student_score | weight | ...
            "round": int,
            "value": float,
        },
        pk=("run_id", "item_id", "name", "round"),
    )
    db["benchmark_results"].create(
        {
            "id": int,
            "benchmark": str,
            "model": str,
            "task": str,
            "metric": str,
            "value": float,
            "stderr": float,
            "n": int,
            "run_id": str,
            "meta": str,  # versions, settings
            "created_at": str,
        },
        pk="id",
    )
    db["benchmark_results"].create_index(["benchmark", "model", "task", "metric"], unique=True)
