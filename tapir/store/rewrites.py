"""The ``rewrites`` table: which item a rewriter turned into which new one."""

from __future__ import annotations

from tapir.store.db import Store, utcnow


def add_rewrite(store: Store, scope: str, item_id: str, new_item_id: str | None, rewriter: str, round: int,
                instruction: str, refined_instruction: str | None, error: str | None = None) -> None:
    """Upsert one rewrite on (scope, item, rewriter, round). The caller
    holds the transaction."""
    store.db.conn.execute(
        "insert or replace into rewrites (scope, item_id, new_item_id, rewriter, round, instruction, "
        "refined_instruction, error, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scope, item_id, new_item_id, rewriter, round, instruction, refined_instruction, error, utcnow()])
