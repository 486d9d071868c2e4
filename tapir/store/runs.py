"""The ``runs`` table: one row per run (its id is the hash of its config).

``config`` has one reading: :func:`decode_config` (NULL, text that is not
JSON and JSON that is not an object read as ``{}``)."""

from __future__ import annotations

import json
from typing import Any

from tapir.store.db import Store

_COLUMNS = ("id", "name", "status", "config", "created_at", "updated_at", "tapir_version")


def decode_config(text: str | None) -> dict[str, Any]:
    """A run's config from ``runs.config``: always a dict."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_row(store: Store, run_id: str) -> dict[str, Any] | None:
    """The row of run ``run_id`` with ``config`` decoded (``{}`` when it is
    not JSON), or None."""
    row = store.execute(f"select {', '.join(_COLUMNS)} from runs where id = ?", [run_id]).fetchone()
    if row is None:
        return None
    run = dict(zip(_COLUMNS, row))
    try:
        run["config"] = json.loads(run["config"] or "{}")
    except ValueError:
        run["config"] = {}
    return run


def runs_named_with_prefix(store: Store, prefix: str) -> list[tuple[str, str]]:
    """(id, name) of the runs whose name starts with ``prefix``, oldest first."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return store.execute("select id, name from runs where name like ? escape '\\' order by created_at, id",
                         [pattern]).fetchall()


def run_status(store: Store, run_id: str) -> str | None:
    """The status of run ``run_id``; None when there is no such run."""
    row = store.execute("select status from runs where id = ?", [run_id]).fetchone()
    return row[0] if row else None


def study_runs(store: Store, study: str) -> list[tuple[str, str, str, str, str]]:
    """(id, name, status, config, created_at) of the runs whose config says
    ``study.name: <study>``, in the order they were started."""
    return store.execute(
        "select id, name, status, config, created_at from runs where json_extract(config, '$.study.name') = ? "
        "order by created_at, id", [study]).fetchall()


def study_names(store: Store) -> list[str]:
    """Every study named in a stored run config."""
    return [r[0] for r in store.execute(
        "select distinct json_extract(config, '$.study.name') from runs "
        "where json_extract(config, '$.study.name') is not null")]


def all_runs(store: Store) -> list[dict[str, Any]]:
    """Every run row, oldest first (``config`` as stored)."""
    return list(store["runs"].rows_where(order_by="created_at"))


def run_exists(store: Store, run_id: str) -> bool:
    return store.execute("select 1 from runs where id = ?", [run_id]).fetchone() is not None


def latest_run_named(store: Store, name: str) -> str | None:
    """The id of the latest run named ``name``, or None."""
    row = store.execute("select id from runs where name = ? order by updated_at desc, created_at desc limit 1",
                        [name]).fetchone()
    return row[0] if row else None


def runs_with_id_prefix(store: Store, prefix: str) -> list[tuple[str, str]]:
    """(id, name) of the runs whose id starts with ``prefix``, newest first."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return store.execute("select id, name from runs where id like ? escape '\\' order by created_at desc",
                         [pattern]).fetchall()


def recent_runs(store: Store, limit: int = 10) -> list[tuple[str, str]]:
    """(id, name) of the latest ``limit`` runs, newest first."""
    return store.execute("select id, name from runs order by created_at desc limit ?", [limit]).fetchall()


def run_config(store: Store, run_id: str) -> dict[str, Any]:
    """The stored (redacted) config of run ``run_id``; ``{}`` when none or not JSON."""
    row = store.execute("select config from runs where id = ?", [run_id]).fetchone()
    try:
        return json.loads(row[0]) if row and row[0] else {}
    except ValueError:
        return {}


def runs_in_order(store: Store) -> list[tuple[str, str, dict[str, Any], str]]:
    """(id, name, config decoded, created_at) of every run, in the order
    they were created."""
    return [(rid, name, decode_config(config), created) for rid, name, config, created in store.execute(
        "select id, name, config, created_at from runs order by created_at, rowid")]


def statuses_and_configs(store: Store, run_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """run id -> (status, config decoded) of those of ``run_ids`` that exist."""
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    return {rid: (status, decode_config(config)) for rid, status, config in store.execute(
        f"select id, status, config from runs where id in ({marks})", run_ids)}


def start_run(store: Store, run_id: str, name: str, config_text: str, config_hash: str, version: str,
              now: str) -> None:
    """Mark run ``run_id`` running with its (redacted, encoded) config: a new
    row, or the existing one's status, config and hash (its name and
    ``created_at`` kept). The caller holds the transaction."""
    conn = store.db.conn
    updated = conn.execute("update runs set status = 'running', updated_at = ?, config = ?, config_hash = ? "
                           "where id = ?", [now, config_text, config_hash, run_id]).rowcount
    if not updated:
        conn.execute("insert into runs (id, name, config, config_hash, tapir_version, status, created_at, updated_at) "
                     "values (?, ?, ?, ?, ?, 'running', ?, ?)", [run_id, name, config_text, config_hash, version,
                                                                   now, now])


def set_run_status(store: Store, run_id: str, status: str, now: str) -> None:
    """Set run ``run_id``'s status. The caller holds the transaction."""
    store.db.conn.execute("update runs set status = ?, updated_at = ? where id = ?", [status, now, run_id])
