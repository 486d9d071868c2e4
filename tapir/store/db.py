"""Opening the database: path resolution, checks, WAL, migrations.

Before tapir writes a byte into an existing file it checks, read-only, that
the file is an SQLite database, that it is tapir's (it has ``_migrations``)
and that its schema is one this version knows (no migration from a newer
tapir). Every problem is a :class:`StoreError` (exit 2) that says what is
wrong, where, and how to fix it; :func:`check_store` lists the same problems
without creating or writing anything (for preflight).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from tapir.errors import ConfigError, TapirError
from tapir.store.locks import live_holders
from tapir.store.migrations import migrate

DEFAULT_DB = "tapir.db"
# How long a write waits for another process's write transaction before
# giving up with a "locked" message.
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WHERE = "(set by --db, TAPIR_DB or the config's db:)"


class StoreError(ConfigError):
    """The database cannot be used as it is: found before anything was
    written (exit code 2)."""


class StoreMissing(TapirError):
    """A command that only reads was pointed at a database that does not
    exist: a command-line mistake (exit code 2), as a folder given for --db is."""

    exit_code = 2


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """``--db`` beats ``TAPIR_DB`` beats ``./tapir.db``."""
    return Path(path or os.environ.get("TAPIR_DB") or DEFAULT_DB)


_stamped: tuple[int, str] = (-1, "")  # the last whole second stamped and its "YYYY-MM-DDTHH:MM:SS" text


def utcnow() -> str:
    """Now in UTC as ``2026-12-07T20:29:14.123Z`` (ISO 8601, milliseconds,
    truncated as ``datetime.isoformat(timespec="milliseconds")`` does).
    The date and time of day are formatted once per second: a store writes
    several stamps per LLM call."""
    global _stamped
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    stamped = _stamped  # one read: a pair another thread replaces whole
    if stamped[0] != seconds:
        stamped = _stamped = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{stamped[1]}.{nanos // 1_000_000:03d}Z"


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class Store:
    """A migrated sqlite-utils database plus the few helpers every stage needs."""

    def __init__(self, db: sqlite_utils.Database, path: Path | None = None, readonly: bool = False):
        self.db = db
        self.path = path
        self.readonly = readonly
        self._depth = 0  # transaction scopes open (see :meth:`transaction`)
        self._tx_lock = threading.RLock()
        # The uid maps of tapir.store.items (an item row's item_uid without a query per row); None: not read.
        self.item_uids: Any = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that nests: only the outermost scope commits
        (or rolls back, when an exception leaves it); an inner scope joins
        it. The writers of per-call rows use it instead of ``with conn:``
        (which commits at every exit), so the cache's llm_calls row, the
        stage's response row and its outcome rows of one call commit
        together. Other threads wait for the outermost scope to end."""
        conn = self.db.conn
        with self._tx_lock:
            outer = self._depth == 0
            self._depth += 1
            try:
                yield conn
            except BaseException:
                self._depth -= 1
                if outer:
                    conn.rollback()
                    self.item_uids = None  # they may hold items the rollback took back
                raise
            self._depth -= 1
            if outer:
                try:
                    conn.commit()
                except BaseException:
                    conn.rollback()  # a failed commit (the database locked too long) leaves nothing open
                    self.item_uids = None
                    raise

    @property
    def in_transaction(self) -> bool:
        """Whether a :meth:`transaction` scope is open."""
        return self._depth > 0

    def __getitem__(self, table: str):
        return self.db[table]

    def execute(self, sql: str, params: Any = ()):
        return self.db.execute(sql, params)

    def close(self) -> None:
        self.db.close()

    def schema(self) -> str:
        return self.db.schema


# --------------------------------------------------------------------------- checks (read-only)


def known_migrations() -> list[str]:
    from tapir.store import migrations

    return [name for name, _ in migrations.MIGRATIONS]


def _schema_label(names: list[str]) -> str:
    return f"schema version {len(names)} ({names[-1]})" if names else "no schema"


def writable_folder(folder: Path) -> bool:
    """Can files be created in ``folder``? Asked of the file system itself
    (a probe file, removed at once): ``os.access`` says yes to root on a
    read-only mount."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".tapir-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _existing_ancestor(path: Path) -> Path:
    folder = path.parent if str(path.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _reading_connection(path: Path, timeout: float = 1.0, **kwargs) -> sqlite3.Connection:
    """A connection that only reads ``path``. A read-write connection with
    ``query_only`` where the folder allows it: as the last one to close, it
    removes the ``-wal``/``-shm`` files that reading a WAL database makes (a
    ``mode=ro`` connection would leave them behind)."""
    folder = path.parent if str(path.parent) else Path(".")
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK):
        conn = sqlite3.connect(str(path), timeout=timeout, **kwargs)
        conn.execute("PRAGMA query_only = 1")
    else:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout, **kwargs)
    return conn


def _lock_holders(path: Path) -> list[str]:
    """Who tapir's ``locks`` table says holds ``path`` (live holders only)."""
    try:
        conn = _reading_connection(path)
    except sqlite3.Error:
        return []
    try:
        return live_holders(conn)
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def _locked_message(path: Path) -> str:
    holders = _lock_holders(path)
    if holders:
        return (f"database {path} is locked by another tapir process ({'; '.join(holders)}). "
                f"Wait for it to finish (or pass --wait), or stop that process")
    return (f"database {path} is locked by another program (a write held for over {BUSY_TIMEOUT_S:g} s). "
            f"Close the program that holds it (an sqlite3 shell, a DB browser, another job), then run again")


def _problem_of(exc: sqlite3.Error, path: Path) -> str:
    """The user's words for an SQLite error on ``path``."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return _locked_message(path)
    if "not a database" in text or "file is encrypted" in text:
        return (f"{path} is not an SQLite database {_WHERE}. Point --db at a tapir database, or at a new "
                f"file name to start one")
    if "malformed" in text or "corrupt" in text:
        return (f"database {path} is damaged ({text}). Restore it from a copy, or try "
                f"`sqlite3 {path} .recover | sqlite3 recovered.db` and use recovered.db; "
                f"or pass --db with a new file name")
    if "readonly" in text or "read-only" in text:
        return (f"database {path} cannot be written (read-only file or folder). Fix the permissions, or pass "
                f"--db with a path in a writable folder")
    if "unable to open" in text:
        if path.is_dir():
            return (f"--db {path} is a folder, not a database file {_WHERE}. Give a file path, "
                    f"e.g. {path / DEFAULT_DB}")
        return (f"database {path} cannot be opened: folder {path.parent or Path('.')} is missing or not "
                f"writable. Pass --db with a path in a writable folder")
    return f"database {path}: {text}. Pass --db with another file, or move this one aside"


def inspect_file(path: Path) -> list[str]:
    """Problems of an existing file, found read-only: not SQLite, damaged,
    someone else's SQLite file, or a schema from a newer tapir."""
    if path.is_dir():
        return [f"--db {path} is a folder, not a database file {_WHERE}. Give a file path, "
                f"e.g. {path / DEFAULT_DB}"]
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except PermissionError:
        return [f"database {path} cannot be read (permission denied). Fix its permissions, or pass --db "
                f"with another file"]
    if not head:
        return []  # an empty file: SQLite treats it as a blank database
    if head != _SQLITE_MAGIC:
        return [f"{path} is not an SQLite database {_WHERE}. Point --db at a tapir database, or at a new "
                f"file name to start one"]
    try:
        conn = _reading_connection(path)
    except sqlite3.Error as exc:
        return [_problem_of(exc, path)]
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        if not tables:
            return []
        if "_migrations" not in tables:
            shown = ", ".join(tables[:6]) + (", ..." if len(tables) > 6 else "")
            return [f"{path} is an SQLite database but not tapir's: it has tables ({shown}) and no "
                    f"_migrations table, so tapir will not write into it. Pass --db with a new file name "
                    f"(e.g. tapir.db), or move that file aside"]
        applied = [r[0] for r in conn.execute("select name from _migrations order by rowid")]
        known = known_migrations()
        unknown = [name for name in applied if name not in known]
        if unknown:
            versions = ""
            if "runs" in tables:
                row = conn.execute("select tapir_version from runs where tapir_version is not null "
                                   "order by created_at desc limit 1").fetchone()
                versions = f", last written by tapir {row[0]}" if row else ""
            from tapir import __version__

            return [f"database {path} has {_schema_label(applied)}{versions}: migrations "
                    f"{', '.join(unknown)} come from a newer tapir. This tapir ({__version__}) knows "
                    f"{_schema_label(known)}. Upgrade tapir (pip install -U tapir), or pass --db with "
                    f"another file"]
    except sqlite3.Error as exc:
        return [_problem_of(exc, path)]
    finally:
        conn.close()
    return []


def check_store(path: str | os.PathLike | None = None, *, must_exist: bool = False) -> list[str]:
    """What stops tapir from using the database at ``path``, found without
    creating or writing anything: it is a folder, not SQLite, damaged, not
    tapir's, of a newer schema, or in a folder where tapir cannot write (its
    own file or the WAL files next to it). Empty list: fine (a missing file
    will be created, unless ``must_exist``)."""
    resolved = resolve_db_path(path)
    if not resolved.exists():
        if must_exist:
            return [f"no database at {resolved} (pass --db PATH or set TAPIR_DB)"]
        folder = _existing_ancestor(resolved)
        if not folder.is_dir():
            return [f"cannot create database {resolved}: {folder} is a file, not a folder. Pass --db with "
                    f"another path"]
        if not writable_folder(folder):
            return [f"cannot create database {resolved}: folder {folder} is not writable. Pass --db with a "
                    f"path in a writable folder, or set TAPIR_DB"]
        return []
    problems = inspect_file(resolved)
    if problems:
        return problems
    folder = resolved.parent if str(resolved.parent) else Path(".")
    if not os.access(resolved, os.W_OK) or not writable_folder(folder):
        return [f"database {resolved} cannot be written: {'the file' if not os.access(resolved, os.W_OK) else 'its folder ' + str(folder)} "
                f"is read-only (SQLite also writes {resolved.name}-wal next to it). Fix the permissions, or "
                f"pass --db with a path in a writable folder"]
    return []


# --------------------------------------------------------------------------- opening


def open_store(path: str | os.PathLike | None = None, *, memory: bool = False, create: bool = True,
               readonly: bool = False) -> Store:
    """Open (and migrate) the database at ``path`` (see :func:`resolve_db_path`).

    ``create=False``: a missing file is an error (:class:`StoreMissing`),
    never created: for commands that only read. ``readonly=True`` (implies
    ``create=False``): open read-only, migrate nothing, write nothing; an
    outdated schema is read as it is.

    An unusable file raises :class:`StoreError` (exit 2) before anything is
    written: not SQLite, damaged, someone else's, from a newer tapir, a
    folder, locked, or in a folder tapir cannot write."""
    if memory:
        db = sqlite_utils.Database(memory=True)
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db)
        return Store(db, None)
    resolved = resolve_db_path(path)
    if resolved.is_dir():
        raise StoreError(inspect_file(resolved)[0])
    exists = resolved.exists()
    if not exists and (readonly or not create):
        raise StoreMissing(f"no database at {resolved} (pass --db PATH or set TAPIR_DB)")
    if exists:
        problems = inspect_file(resolved)
        if problems:
            raise StoreError(problems[0])
    else:
        parent = resolved.parent
        if str(parent) and not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create database {resolved}: cannot make folder {parent} "
                                 f"({exc.strerror}). Pass --db with a path in a writable folder") from None
    if readonly:
        return _open_readonly(resolved)
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    try:
        while True:
            try:
                conn = _connect_for_writing(resolved)  # closes its connection when it fails
                break
            except sqlite3.OperationalError as exc:
                # Some lock conflicts come back at once, without SQLite's busy
                # wait (two processes making a new file WAL, a read snapshot
                # turned stale): ask again until the busy timeout is spent.
                if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except sqlite3.Error as exc:
        created = not exists
        if created and resolved.is_file() and resolved.stat().st_size == 0:
            resolved.unlink()  # leave no empty file behind
        if "unable to open" in str(exc) and created:
            raise StoreError(f"cannot create database {resolved}: folder {resolved.parent or Path('.')} is not "
                             f"writable. Pass --db with a path in a writable folder, or set TAPIR_DB") from None
        raise StoreError(_problem_of(exc, resolved)) from None
    return Store(sqlite_utils.Database(conn), resolved)


def _connect_for_writing(resolved: Path) -> sqlite3.Connection:
    """A connection in WAL mode with the schema migrated and the write lock
    known to be free; closed again when any step fails."""
    # check_same_thread=False: the async API backend records calls from
    # the event loop, which runs in the caller's thread but may be driven
    # by worker threads in some backends.
    conn = sqlite3.connect(str(resolved), check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    try:
        db = sqlite_utils.Database(conn)
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.enable_wal()
        # With WAL, synchronous=NORMAL skips the fsync per commit: a process
        # crash still loses nothing committed and the file never corrupts;
        # only a power cut may drop the last commits. Each LLM call is
        # committed on its own, and an fsync each throttles fast API backends.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db)
        # Can we write? Take the write lock and let it go (nothing is
        # written): a database another process keeps locked is found here,
        # with a message that says who, not on the first insert.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_readonly(resolved: Path) -> Store:
    try:
        conn = _reading_connection(resolved, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(_problem_of(exc, resolved)) from None
    return Store(sqlite_utils.Database(conn), resolved, readonly=True)


def open_current_for_reading(path: Path) -> Store | None:
    """A read-only store on the existing database ``path`` when its schema
    has the stores' scopes (m009_scope_and_item_fks applied); None for an
    older or foreign database (nothing in it can be reused). Nothing is
    created, migrated or written."""
    try:
        conn = _reading_connection(path)  # not mode=ro: its -wal/-shm files would stay behind
    except sqlite3.Error:
        return None
    try:
        conn.execute("select scope from outcomes limit 1")
    except sqlite3.Error:
        conn.close()
        return None
    return Store(sqlite_utils.Database(conn), path)
