"""Opening the database: path resolution, WAL, migrations."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from tapir.store.migrations import migrate

DEFAULT_DB = "tapir.db"


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """``--db`` beats ``TAPIR_DB`` beats ``./tapir.db``."""
    return Path(path or os.environ.get("TAPIR_DB") or DEFAULT_DB)


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class Store:
    """A migrated sqlite-utils database plus the few helpers every stage needs."""

    def __init__(self, db: sqlite_utils.Database, path: Path | None = None):
        self.db = db
        self.path = path

    def __getitem__(self, table: str):
        return self.db[table]

    def execute(self, sql: str, params: Any = ()):
        return self.db.execute(sql, params)

    def close(self) -> None:
        self.db.close()

    def schema(self) -> str:
        return self.db.schema


def open_store(path: str | os.PathLike | None = None, *, memory: bool = False) -> Store:
    if memory:
        db = sqlite_utils.Database(memory=True)
        resolved = None
    else:
        resolved = resolve_db_path(path)
        if resolved.parent and not resolved.parent.exists():
            resolved.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the async API backend records calls from
        # the event loop, which runs in the caller's thread but may be driven
        # by worker threads in some backends.
        import sqlite3

        conn = sqlite3.connect(str(resolved), check_same_thread=False, timeout=30)
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        # With WAL, synchronous=NORMAL skips the fsync per commit: a process
        # crash still loses nothing committed and the file never corrupts;
        # only a power cut may drop the last commits. Each LLM call is
        # committed on its own, and an fsync each throttles fast API backends.
        db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db)
    return Store(db, resolved)
