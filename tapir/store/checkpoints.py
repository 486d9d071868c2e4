"""The ``checkpoints`` table: the student a train stage wrote, per round."""

from __future__ import annotations

from typing import Any

from tapir.store.db import Store, dumps, utcnow


def save_checkpoint(store: Store, scope: str, round: int, path: str, base_model: str, trainer: str,
                    metrics: dict[str, Any]) -> None:
    """Upsert the checkpoint of (scope, round). The caller holds the transaction."""
    store.db.conn.execute(
        "insert or replace into checkpoints (scope, round, path, base_model, trainer, metrics, created_at) "
        "values (?, ?, ?, ?, ?, ?, ?)", [scope, round, path, base_model, trainer, dumps(metrics), utcnow()])


def all_checkpoints(store: Store) -> list[dict[str, Any]]:
    """Every checkpoint row, by (scope, round); none when the database has
    no ``checkpoints`` table (an old one read as it is)."""
    if not store["checkpoints"].exists():
        return []
    return list(store.db.query("select * from checkpoints order by scope, round"))
