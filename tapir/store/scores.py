"""The ``scores`` table: named numbers per item (mfd, teacher_score,
student_score, hard, weight, ...) under a stage's scope."""

from __future__ import annotations

from typing import Sequence

from tapir.store.db import Store


def set_scores(store: Store, scope: str, rows: Sequence[tuple[str, str, int, float]]) -> None:
    """Upsert ``(item_id, name, round, value)`` rows under ``scope``. The
    caller holds the transaction."""
    store.db.conn.executemany(
        "insert or replace into scores (scope, item_id, name, round, value) values (?, ?, ?, ?, ?)",
        [(scope, *row) for row in rows])


def scores_by_item(store: Store, scope: str, name: str) -> dict[str, float]:
    """``{item_id: value}`` of the ``name`` scores under ``scope``."""
    return dict(store.execute("select item_id, value from scores where scope = ? and name = ?",
                              [scope, name]).fetchall())
