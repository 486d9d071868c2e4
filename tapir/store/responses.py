"""The ``responses`` table: one model's answer to one item, under the scope
of the stage (or benchmark run) that asked for it."""

from __future__ import annotations

from typing import Any

from tapir.store.db import Store, utcnow
from tapir.store.items import cached_uid


def add_response(store: Store, scope: str, item_id: str, role: str, model: str, round: int, text: str,
                 llm_call_id: int | None, sample: int = 0) -> None:
    """Insert one answer; an existing (scope, item, role, model, round,
    sample) row is kept. The caller holds the transaction. Its
    ``item_uid`` is looked up here (:func:`tapir.store.items.cached_uid`): the
    m009 trigger is left for writers that do not know the item."""
    store.db.conn.execute(
        "insert or ignore into responses (scope, item_id, role, model, round, sample, text, llm_call_id, created_at, "
        "item_uid) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scope, item_id, role, model, round, sample, text, llm_call_id, utcnow(), cached_uid(store, scope, item_id)])


def responses_by_item(store: Store, scope: str, role: str) -> dict[str, dict[str, Any]]:
    """``{item_id: row}`` of the ``role`` answers under ``scope``."""
    return {r["item_id"]: r for r in store.db.query(
        "select * from responses where scope = ? and role = ?", [scope, role])}
