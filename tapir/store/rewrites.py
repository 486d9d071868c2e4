"""The ``rewrites`` table: which item a rewriter turned into which new one."""

from __future__ import annotations

from typing import Sequence

from tapir.store.db import Store, utcnow
from tapir.store.items import cached_uid


def add_rewrite(store: Store, scope: str, item_id: str, new_item_id: str | None, rewriter: str, round: int,
                instruction: str, refined_instruction: str | None, error: str | None = None) -> None:
    """Upsert one rewrite on (scope, item, rewriter, round). The caller
    holds the transaction. Its ``item_uid`` is looked up here
    (:func:`tapir.store.items.cached_uid`)."""
    store.db.conn.execute(
        "insert or replace into rewrites (scope, item_id, new_item_id, rewriter, round, instruction, "
        "refined_instruction, error, created_at, item_uid) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scope, item_id, new_item_id, rewriter, round, instruction, refined_instruction, error, utcnow(),
         cached_uid(store, scope, item_id)])


def columns(store: Store) -> set[str]:
    """The columns of the ``rewrites`` table (none when it does not exist)."""
    return set(store["rewrites"].columns_dict) if store["rewrites"].exists() else set()


def refined_pairs(store: Store, scopes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(instruction, refined instruction) of the rewrites without an error
    (under one of ``scopes`` when given), in the order they were written.
    The table must have both instruction columns (see :func:`columns`)."""
    where = ["instruction is not null", "refined_instruction is not null"]
    params: list[str] = []
    if "error" in columns(store):
        where.append("error is null")
    if scopes is not None:
        where.append(f"scope in ({', '.join('?' * len(scopes))})")
        params += list(scopes)
    sql = f"select instruction, refined_instruction from rewrites where {' and '.join(where)} order by rowid"
    return [(a, b) for a, b in store.execute(sql, params).fetchall()]
