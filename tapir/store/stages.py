"""The ``stages`` table: a run's view of each stage (name, round), its key
(the ``scope`` of the rows the stage wrote), status, time and ``info``.

``info`` has one encoding: a JSON object (counts, figures, an ``error``
line), written by :func:`encode_info` and read back only through
:func:`decode_info`, which turns NULL, text that is not JSON and JSON that
is not an object into ``{}``."""

from __future__ import annotations

import json
from typing import Any

from tapir.store.db import Store, dumps
from tapir.store.items import forget_uid_maps


def encode_info(info: dict[str, Any] | None) -> str:
    """``stages.info`` for ``info``."""
    return dumps(info or {})


def decode_info(text: str | None) -> dict[str, Any]:
    """A stage's info from ``stages.info``: always a dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_stages(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The stage rows of run ``run_id`` in the order they were written,
    ``info`` decoded."""
    return [{**row, "info": decode_info(row["info"])}
            for row in store["stages"].rows_where("run_id = ?", [run_id], order_by="id")]


def done_stage(store: Store, key: str) -> dict[str, Any] | None:
    """The latest done stage row of ``key`` in any run (``run_id``,
    ``info`` decoded, ``seconds``), or None."""
    row = store.execute("select run_id, info, seconds from stages where key = ? and status = 'done' "
                        "order by id desc limit 1", [key]).fetchone()
    if row is None:
        return None
    return {"run_id": row[0], "info": decode_info(row[1]), "seconds": row[2]}


def last_finished(store: Store, key: str) -> tuple[str, dict[str, Any]] | None:
    """(status, info) of the latest done or failed stage row of ``key``."""
    row = store.execute("select status, info from stages where key = ? and status in ('done', 'failed') "
                        "order by id desc limit 1", [key]).fetchone()
    return (row[0], decode_info(row[1])) if row else None


def failures_by_kind(store: Store, scope: str) -> list[tuple[str | None, int, str, str]]:
    """The failed outcomes under ``scope`` per error kind, most first:
    (kind, count, an example item, an example reason)."""
    return store.execute(
        "select error_kind, count(*), min(item_id), min(reason) from outcomes "
        "where scope = ? and status = 'failed' group by error_kind order by count(*) desc", [scope]).fetchall()


def calls_by_role(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The LLM calls of a run's stages per role: calls, errors, tokens, cost."""
    return [dict(zip(("role", "calls", "errors", "tokens", "cost"), r)) for r in store.execute(
        "select coalesce(role, '?'), count(*), sum(error is not null), "
        "coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0), coalesce(sum(cost), 0) "
        "from llm_calls where stage_key in (select key from stages where run_id = ?) group by role",
        [run_id])]


def train_stage_keys(store: Store) -> list[tuple[str, str]]:
    """(run id, key) of every train stage row that has a key, oldest first."""
    return store.execute("select run_id, key from stages where name = 'train' and key is not null "
                         "order by id").fetchall()


def all_keys(store: Store) -> set[str]:
    """The key of every stage row (of any run) that has one."""
    return {row[0] for row in store.execute("select key from stages where key is not null")}


def keys_of_run(store: Store, run_id: str) -> list[str]:
    """The keys of run ``run_id``'s stage rows, in the order they were
    written (none in a database from before stage keys)."""
    if not store["stages"].exists() or "key" not in store["stages"].columns_dict:
        return []
    return [r[0] for r in store.execute("select key from stages where run_id = ? and key is not null", [run_id])]


def names_of_keys(store: Store, keys: list[str]) -> dict[str, str]:
    """stage key -> stage name, for those of ``keys`` that a stage row has."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    return {k: n for k, n in store.execute(f"select key, name from stages where key in ({marks})", list(keys))}


def keys_named(store: Store, name: str, run_id: str | None = None) -> list[str]:
    """The keys of the stage rows named ``name`` (of run ``run_id`` when given)."""
    scope, params = (" and run_id = ?", [name, run_id]) if run_id else ("", [name])
    return [str(r[0]) for r in store.execute(f"select key from stages where name = ?{scope} and key is not null",
                                             params) if r[0] is not None]


def stage_names(store: Store, run_id: str | None = None) -> list[str]:
    """The distinct stage names (of run ``run_id`` when given), sorted."""
    scope, params = (" where run_id = ?", [run_id]) if run_id else ("", [])
    return [str(r[0]) for r in store.execute(f"select distinct name from stages{scope} order by name", params)
            if r[0] is not None]


# Columns a run writes on its stage rows (``id`` is the database's).
STAGE_COLUMNS = frozenset({"run_id", "name", "round", "key", "status", "started_at", "finished_at", "seconds",
                           "info", "reused_from"})


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - STAGE_COLUMNS)
    if unknown:
        raise ValueError(f"stages has no column {', '.join(unknown)} (columns: {', '.join(sorted(STAGE_COLUMNS))})")
    return values


def stage_row(store: Store, run_id: str, name: str, round: int) -> dict[str, Any] | None:
    """The stage row (name, round) of run ``run_id`` as stored (``info``
    text), or None."""
    rows = list(store.db.query("select * from stages where run_id = ? and name = ? and round = ? order by id limit 1",
                               [run_id, name, round]))
    return rows[0] if rows else None


def add_stage(store: Store, values: dict[str, Any]) -> None:
    """Insert a stage row of :data:`STAGE_COLUMNS` values (``info`` encoded
    by :func:`encode_info`). The caller holds the transaction."""
    values = _checked(values)
    store.db.conn.execute(f"insert into stages ({', '.join(values)}) values ({', '.join('?' * len(values))})",
                          list(values.values()))
    forget_uid_maps(store)  # a run's stage keys are the scopes an item row's uid is looked up in


def update_stage(store: Store, stage_id: int, values: dict[str, Any]) -> None:
    """Set the given :data:`STAGE_COLUMNS` of stage row ``stage_id``. The
    caller holds the transaction."""
    values = _checked(values)
    if values:
        store.db.conn.execute(f"update stages set {', '.join(f'[{c}] = ?' for c in values)} where id = ?",
                              [*values.values(), stage_id])
        if "key" in values or "run_id" in values:
            forget_uid_maps(store)


def stage_done(store: Store, run_id: str, name: str) -> bool:
    """Has run ``run_id`` a done stage named ``name`` (any round)?"""
    return store.execute("select 1 from stages where run_id = ? and name = ? and status = 'done' limit 1",
                         [run_id, name]).fetchone() is not None


def has_keys(store: Store) -> bool:
    """Do stage rows have a ``key`` column (not in a database from before
    stage keys, read as it is)?"""
    return store["stages"].exists() and "key" in store["stages"].columns_dict


def stored_stages(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The stage rows of run ``run_id`` as stored (``info`` text), in the
    order they were written."""
    return list(store.db.query("select * from stages where run_id = ? order by id", [run_id]))
