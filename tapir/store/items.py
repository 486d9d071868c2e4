"""The ``items`` table: the instructions (seed, expanded, rewritten,
benchmark) every other data row is about.

An item row is stored under a *scope* (the key of the stage that wrote it,
or a benchmark run's id) with its own id (``seed-0001``, ``q81``); its
``uid`` is the digest of the row's content (scope, id, instruction, input,
output), the one column the rows about it (responses, judgments, scores,
classifications, rewrites, outcomes) point at with their ``item_uid``
foreign key: the item of that id in the row's scope, else in a scope of
the same run (the rule of the m009 trigger). The store's own writers
pass it, read from per-scope maps the store keeps (:func:`cached_uid`,
:func:`cached_uids`: no query per row); a trigger per table (see
:func:`tapir.store.migrations.item_link_trigger`) fills it by the same rule
for a row written without it (a writer outside the store).

The maps: per scope, the uid of every item under that scope (read once,
kept up to date by :func:`add_items`), and per set of *sibling* scopes
(the stage keys of the runs that have the scope as a stage) the uid of the
latest written item of each id among them, read at the first miss. Adding
a stage row or deleting items forgets them all (:func:`forget_uid_maps`),
and so does a rolled-back :meth:`~tapir.store.db.Store.transaction`. They
see what this process writes: items another process adds meanwhile to a
scope of the same run are seen after the next stage starts.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from tapir.store.db import Store, dumps
from tapir.store.uids import item_uid

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
        _added(store, scope, params)
    return len(params)


# --------------------------------------------------------------------------- the uid maps

_KEEP_SCOPES = 8  # scopes whose items' uids are kept (the oldest read is forgotten first)
_KEEP_RUNS = 1  # sibling sets whose latest uids are kept: the whole run's items, so one


class UidMaps:
    """What the store keeps to give an item row's ``item_uid`` without a
    query per row (held by :attr:`tapir.store.db.Store.item_uids`)."""

    def __init__(self) -> None:
        self.own: dict[str, dict[str, str]] = {}  # scope -> {id: uid} of every item under it
        self.siblings: dict[str, frozenset[str]] = {}  # scope -> the stage keys of the runs that have it as a stage
        self.latest: dict[frozenset[str], dict[str, str]] = {}  # siblings -> {id: uid of the latest written item}


def _maps(store: Store) -> UidMaps:
    maps = store.item_uids
    if maps is None:
        maps = store.item_uids = UidMaps()
    return maps


def forget_uid_maps(store: Store) -> None:
    """Forget the uid maps (a stage row was added or re-keyed, items were
    deleted): the next lookup reads them again."""
    store.item_uids = None


def _own(store: Store, maps: UidMaps, scope: str) -> dict[str, str]:
    own = maps.own.get(scope)
    if own is None:
        if len(maps.own) >= _KEEP_SCOPES:
            del maps.own[next(iter(maps.own))]
        own = maps.own[scope] = dict(store.execute("select id, uid from items where scope = ?", [scope]).fetchall())
    return own


_SIBLINGS = ("select other.key from stages mine join stages other on other.run_id = mine.run_id "
             "where mine.key = ? and other.key is not null")


def _latest(store: Store, maps: UidMaps, scope: str) -> dict[str, str]:
    siblings = maps.siblings.get(scope)
    if siblings is None:
        siblings = maps.siblings[scope] = frozenset(r[0] for r in store.execute(_SIBLINGS, [scope]))
    latest = maps.latest.get(siblings)
    if latest is None:
        while len(maps.latest) >= _KEEP_RUNS:
            del maps.latest[next(iter(maps.latest))]
        # ascending rowid: the latest written item of an id is the one kept
        latest = maps.latest[siblings] = dict(store.execute(
            f"select id, uid from items where scope in ({_SIBLINGS}) order by rowid", [scope]).fetchall())
    return latest


def _added(store: Store, scope: str, params: list[tuple]) -> None:
    """Bring the uid maps up to date after ``params`` (rows of ``_INSERT``)
    were inserted (or ignored: an existing (scope, id) is kept) under ``scope``."""
    maps = store.item_uids
    if maps is None:
        return
    own = maps.own.get(scope)
    if own is None:
        # Which rows were new is unknown: forget the latest uids that read this scope.
        for siblings in [s for s in maps.latest if scope in s]:
            del maps.latest[siblings]
        return
    new = []
    for row in params:
        uid, item_id = row[0], row[2]
        if item_id not in own:  # insert or ignore: the first row of an id is the one stored
            own[item_id] = uid
            new.append((item_id, uid))
    for siblings, latest in maps.latest.items():
        if scope in siblings:
            latest.update(new)  # the rows just written are the latest of their ids


def cached_uid(store: Store, scope: str, item_id: str) -> str | None:
    """``items.uid`` of the item a row (``scope``, ``item_id``) is about
    (the rule of the m009 trigger), or None, from the store's uid maps: a
    writer of one row at a time asks no query once the maps are read."""
    maps = _maps(store)
    uid = _own(store, maps, scope).get(item_id)
    if uid is None:
        uid = _latest(store, maps, scope).get(item_id)
    return uid


def cached_uids(store: Store, scope: str, item_ids: Iterable[str]) -> dict[str, str]:
    """item id -> ``items.uid`` for those of ``item_ids`` that have one:
    from the store's uid maps (:func:`cached_uid`)."""
    found = {}
    for item_id in item_ids:
        uid = cached_uid(store, scope, item_id)
        if uid is not None:
            found[item_id] = uid
    return found


def item_rows(store: Store, scope: str) -> Sequence[tuple]:
    """``(id, instruction, input, output, task_type, meta, origin, round)``
    of the items under ``scope``, in the order they were written."""
    return store.execute(
        "select id, instruction, input, output, task_type, meta, origin, round from items "
        "where scope = ? order by rowid", [scope]).fetchall()
