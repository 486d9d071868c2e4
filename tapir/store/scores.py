"""The ``scores`` table: named numbers per item (mfd, teacher_score,
student_score, hard, weight, ...) under a stage's scope."""

from __future__ import annotations

from typing import Sequence

from tapir.store.db import Store
from tapir.store.items import cached_uids


def set_scores(store: Store, scope: str, rows: Sequence[tuple[str, str, int, float]]) -> None:
    """Upsert ``(item_id, name, round, value)`` rows under ``scope``. The
    caller holds the transaction. The rows' ``item_uid`` is looked up here,
    for all of them at once (:func:`tapir.store.items.cached_uids`)."""
    uids = cached_uids(store, scope, [row[0] for row in rows])
    store.db.conn.executemany(
        "insert or replace into scores (scope, item_id, name, round, value, item_uid) values (?, ?, ?, ?, ?, ?)",
        [(scope, *row, uids.get(row[0])) for row in rows])


def scores_by_item(store: Store, scope: str, name: str) -> dict[str, float]:
    """``{item_id: value}`` of the ``name`` scores under ``scope``."""
    return dict(store.execute("select item_id, value from scores where scope = ? and name = ?",
                              [scope, name]).fetchall())
