"""The ``classifications`` table: an item's task type as a classifier gave it."""

from __future__ import annotations

from typing import Iterable

from tapir.store.db import Store, utcnow
from tapir.store.items import cached_uids


def set_labels(store: Store, scope: str, classifier: str,
               rows: Iterable[tuple[str, str | None, float | None]]) -> None:
    """Upsert ``(item_id, label, confidence)`` rows of ``classifier`` under
    ``scope``. The caller holds the transaction. The rows' ``item_uid`` is
    looked up here, for all of them at once (:func:`tapir.store.items.cached_uids`)."""
    now = utcnow()
    rows = list(rows)
    uids = cached_uids(store, scope, [row[0] for row in rows])
    store.db.conn.executemany(
        "insert or replace into classifications (scope, item_id, classifier, label, confidence, created_at, item_uid) "
        "values (?, ?, ?, ?, ?, ?, ?)",
        [(scope, item_id, classifier, label, conf, now, uids.get(item_id)) for item_id, label, conf in rows])


def labels_by_item(store: Store, scope: str) -> dict[str, str]:
    """``{item_id: label}`` under ``scope``."""
    return dict(store.execute("select item_id, label from classifications where scope = ?", [scope]).fetchall())
