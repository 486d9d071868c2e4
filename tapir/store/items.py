"""The ``items`` table: the instructions (seed, expanded, rewritten,
benchmark) every other data row is about.

An item row is stored under a *scope* (the key of the stage that wrote it,
or a benchmark run's id) with its own id (``seed-0001``, ``q81``); its
``uid`` is the digest of the row's content (scope, id, instruction, input,
output), the one column the rows about it (responses, judgments, scores,
classifications, rewrites, outcomes) point at with their ``item_uid``
foreign key: the item of that id in the row's scope, else in a scope of
the same run (:func:`uids_of`). The store's own writers pass it
(:func:`uids_of` for many rows, :func:`uid_of` for one); a trigger per
table (see :func:`tapir.store.migrations.item_link_trigger`) fills it by
the same rule for a row written without it (a writer outside the store).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from tapir.store.db import Store, dumps
from tapir.store.uids import item_uid

_CHUNK = 500

_INSERT = ("insert or ignore into items (uid, scope, id, origin, round, instruction, input, output, task_type, "
           "meta) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def add_items(store: Store, scope: str, items: Iterable[dict[str, Any]]) -> int:
    """Insert item rows (``id``, ``origin``, ``round``, ``instruction``,
    ``input``, ``output``, ``task_type``, ``meta`` dict) under ``scope``;
    an existing (scope, id) row is kept. The caller holds the transaction.
    Returns how many rows were given."""
    params = []
    for it in items:
        instruction, input_text, output = it["instruction"], it.get("input", ""), it.get("output")
        params.append((item_uid(scope, it["id"], instruction, input_text, output), scope, it["id"],
                       it.get("origin"), it.get("round", 0), instruction, input_text, output, it.get("task_type"),
                       dumps(it.get("meta") or {})))
    if params:
        store.db.conn.executemany(_INSERT, params)
    return len(params)


def uids_of(store: Store, scope: str, item_ids: Iterable[str]) -> dict[str, str]:
    """item id -> ``items.uid`` of the item a row (``scope``, item id) is
    about, for those of ``item_ids`` that have one: the rule of the
    ``item_uid`` triggers (m009), for many rows in two queries: the item of
    that id in ``scope`` itself, else in a scope of a run that has ``scope``
    as a stage (the latest written when several)."""
    ids = list(dict.fromkeys(item_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        found.update(store.execute(f"select id, uid from items where scope = ? and id in ({','.join('?' * len(chunk))})",
                                   [scope, *chunk]).fetchall())
    rest = [i for i in ids if i not in found]
    for start in range(0, len(rest), _CHUNK):
        chunk = rest[start:start + _CHUNK]
        # ascending rowid: the latest written item of an id is the one kept
        found.update(store.execute(
            f"select id, uid from items where id in ({','.join('?' * len(chunk))}) and scope in ("
            "select other.key from stages mine join stages other on other.run_id = mine.run_id "
            "where mine.key = ? and other.key is not null) order by rowid", [*chunk, scope]).fetchall())
    return found


# The rule of :func:`uids_of` for one row, in one statement (?1 scope, ?2 item id).
_UID_OF = ("select coalesce((select uid from items where scope = ?1 and id = ?2), "
           "(select uid from items where id = ?2 and scope in (select other.key from stages mine join stages other "
           "on other.run_id = mine.run_id where mine.key = ?1 and other.key is not null) order by rowid desc limit 1))")


def uid_of(store: Store, scope: str, item_id: str) -> str | None:
    """``items.uid`` of the item row (``scope``, ``item_id``) is about (the
    rule of :func:`uids_of`, in one query: a writer of one row at a time), or None."""
    return store.db.conn.execute(_UID_OF, [scope, item_id]).fetchone()[0]


def item_rows(store: Store, scope: str) -> Sequence[tuple]:
    """``(id, instruction, input, output, task_type, meta, origin, round)``
    of the items under ``scope``, in the order they were written."""
    return store.execute(
        "select id, instruction, input, output, task_type, meta, origin, round from items "
        "where scope = ? order by rowid", [scope]).fetchall()
