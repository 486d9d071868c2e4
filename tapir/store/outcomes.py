"""The ``outcomes`` table: what became of each item a stage handled (ok,
or failed with a reason), under the stage's scope (its key).

A failed outcome is asked again by a re-run unless its content failed
``max_draws`` times or reproduces (the same inputs give the same reply):
:func:`retried_where` is that rule in SQL; ``max_draws=None`` (a database
without ``outcomes.draws``) retries every failed item."""

from __future__ import annotations

from typing import Sequence

from tapir.store.db import Store
from tapir.store.items import cached_uids

COLUMNS = ("scope", "item_id", "status", "reason", "error_kind", "http_status", "llm_call_id", "attempts",
           "updated_at", "draws", "reproduces")


def retried_where(max_draws: int | None) -> str:
    """The SQL condition of the failed outcomes a re-run asks again."""
    if max_draws is None:
        return "1"
    return f"(draws is null or (coalesce(reproduces, 0) = 0 and draws < {int(max_draws)}))"


_WITH_UID = (*COLUMNS, "item_uid")


def save_outcomes(store: Store, rows: Sequence[tuple]) -> None:
    """Upsert outcome rows, tuples in :data:`COLUMNS` order, in one
    transaction. Each row's ``item_uid`` is looked up here, for all rows of
    a scope at once (:func:`tapir.store.items.cached_uids`), so the per-row
    ``item_uid`` trigger only runs for a row about no stored item."""
    by_scope: dict[str, list[str]] = {}
    for row in rows:
        by_scope.setdefault(row[0], []).append(row[1])
    with store.transaction():
        uids = {scope: cached_uids(store, scope, ids) for scope, ids in by_scope.items()}
        store.db.conn.executemany(
            f"insert or replace into outcomes ({', '.join(_WITH_UID)}) values ({', '.join('?' * len(_WITH_UID))})",
            [(*row, uids[row[0]].get(row[1])) for row in rows])


def known_outcomes(store: Store, scope: str, with_draws: bool = True) -> list[tuple]:
    """(item_id, status, draws, reproduces) of every outcome under ``scope``
    (draws and reproduces None when ``with_draws`` is False: an older database)."""
    if with_draws:
        return store.execute("select item_id, status, draws, reproduces from outcomes where scope = ?",
                             [scope]).fetchall()
    return [(i, s, None, None) for i, s in store.execute("select item_id, status from outcomes where scope = ?",
                                                          [scope])]


def count_retried(store: Store, scope: str, max_draws: int | None) -> int:
    """Failed items under ``scope`` that a re-run asks again."""
    return store.execute(f"select count(*) from outcomes where scope = ? and status = 'failed' and "
                         f"{retried_where(max_draws)}", [scope]).fetchone()[0]


def count_handled(store: Store, scope: str) -> int:
    """Items under ``scope`` with an outcome (ok or failed)."""
    return store.execute("select count(*) from outcomes where scope = ?", [scope]).fetchone()[0]


def retried_items(store: Store, scope: str, max_draws: int | None) -> list[str]:
    """The failed items under ``scope`` a re-run asks again, by id."""
    return [r[0] for r in store.execute(f"select item_id from outcomes where scope = ? and status = 'failed' and "
                                        f"{retried_where(max_draws)} order by item_id", [scope])]


def ok_items(store: Store, scope: str) -> list[str]:
    """The items under ``scope`` that ended ok, by id."""
    return [r[0] for r in store.execute("select item_id from outcomes where scope = ? and status = 'ok' "
                                        "order by item_id", [scope])]


def status_counts(store: Store, scope: str, max_draws: int | None) -> tuple[int, int, int]:
    """(ok, failed, failed for good: not asked again) under ``scope``."""
    return store.execute(
        "select coalesce(sum(status = 'ok'), 0), coalesce(sum(status = 'failed'), 0), "
        f"coalesce(sum(status = 'failed' and not {retried_where(max_draws)}), 0) from outcomes where scope = ?",
        [scope]).fetchone()


def failures(store: Store, scope: str) -> list[tuple[str, str, str | None]]:
    """(item_id, reason, error_kind) of the failed outcomes under ``scope``."""
    return store.execute("select item_id, reason, error_kind from outcomes where scope = ? and status = 'failed'",
                         [scope]).fetchall()


def has_draws_column(store: Store) -> bool:
    """Whether ``outcomes.draws`` exists (m008)."""
    return "draws" in {row[1] for row in store.execute("pragma table_info(outcomes)")}
