"""The ``locks`` table: who holds which named lock (``run:<id>``,
``stage:<key>``, ``call:<cache key>``), with a heartbeat.

The rows and the rule for a live holder live here, below the store's
opening code (which names the holders of a locked database) and below
:mod:`tapir.locks` (the :class:`~tapir.locks.Lock` a process takes, with
its heartbeat thread): neither imports the other.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from typing import Callable

# A holder on another host whose heartbeat is older than this is dead.
STALE_S = 30.0
HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def holder_alive(pid: int, host: str, heartbeat_at: float) -> bool:
    """Is the process that holds a lock still there? On this host: its pid
    runs; elsewhere: its heartbeat is younger than ``STALE_S``."""
    if host == HOST:
        return pid == os.getpid() or _pid_alive(pid)
    return time.time() - (heartbeat_at or 0.0) < STALE_S


def claim(conn: sqlite3.Connection, name: str, acquired_at: str) -> bool:
    """Take lock ``name`` for this process in one write transaction, unless
    another live process holds it (then False, nothing written)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("select pid, host, heartbeat_at from locks where name = ?", [name]).fetchone()
        if row is not None and not (row[0] == os.getpid() and row[1] == HOST) and holder_alive(*row):
            conn.execute("COMMIT")
            return False
        conn.execute("insert or replace into locks (name, pid, host, acquired_at, heartbeat_at) values (?, ?, ?, ?, ?)",
                     [name, os.getpid(), HOST, acquired_at, time.time()])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def holder(conn: sqlite3.Connection, name: str) -> tuple[int, str, str] | None:
    """(pid, host, acquired_at) of whoever holds ``name``, or None."""
    row = conn.execute("select pid, host, acquired_at from locks where name = ?", [name]).fetchone()
    return tuple(row) if row else None


def drop(conn: sqlite3.Connection, name: str) -> None:
    """Let go of ``name`` if this process holds it."""
    with conn:
        conn.execute("delete from locks where name = ? and pid = ? and host = ?", [name, os.getpid(), HOST])


def beat(conn: sqlite3.Connection) -> None:
    """Refresh the heartbeat of every lock this process holds."""
    with conn:
        conn.execute("update locks set heartbeat_at = ? where pid = ? and host = ?", [time.time(), os.getpid(), HOST])


def live_holders(conn: sqlite3.Connection) -> list[str]:
    """The live holders of run and stage locks (call claims left out), as
    ``"<name> by pid <pid> on <host> since <time>"``."""
    rows = conn.execute("select name, pid, host, acquired_at, heartbeat_at from locks "
                        "where name not like 'call:%' order by acquired_at").fetchall()
    return [f"{name} by pid {pid} on {host} since {since}" for name, pid, host, since, heartbeat in rows
            if holder_alive(pid, host, heartbeat or 0.0)]


_CHUNK = 500


def claim_many(conn: sqlite3.Connection, names: list[str],
               stamp: Callable[[], str]) -> tuple[list[str], list[str]]:
    """Split lock ``names`` into those this process now holds and those a
    live other process holds, in one write transaction (``BEGIN
    IMMEDIATE``: two processes never both take a name); ``stamp()`` gives
    each new row's ``acquired_at``. The caller serialises its threads
    around the call."""
    pid = os.getpid()
    mine, theirs = [], []
    conn.execute("BEGIN IMMEDIATE")
    try:
        held: dict[str, tuple] = {}
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for name, opid, host, beat in conn.execute(
                f"select name, pid, host, heartbeat_at from locks where name in ({marks})", chunk,
            ):
                held[name] = (opid, host, beat)
        now = time.time()
        for name in names:
            other = held.get(name)
            if other and not (other[0] == pid and other[1] == HOST) and holder_alive(*other):
                theirs.append(name)
            else:
                mine.append(name)
        conn.executemany(
            "insert or replace into locks (name, pid, host, acquired_at, heartbeat_at) values (?, ?, ?, ?, ?)",
            [(name, pid, HOST, stamp(), now) for name in mine],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return mine, theirs


def drop_many(conn: sqlite3.Connection, names: list[str]) -> None:
    """Let go of those of ``names`` this process holds, in one commit."""
    with conn:
        drop_many_in_transaction(conn, names)


def drop_many_in_transaction(conn: sqlite3.Connection, names: list[str]) -> None:
    """Let go of those of ``names`` this process holds, inside the caller's transaction."""
    if names:
        pid = os.getpid()
        conn.executemany("delete from locks where name = ? and pid = ? and host = ?",
                         [(name, pid, HOST) for name in names])


def drop_in_transaction(conn: sqlite3.Connection, name: str) -> None:
    """Let go of ``name`` if this process holds it, inside the caller's
    transaction (committed with the caller's write)."""
    conn.execute("delete from locks where name = ? and pid = ? and host = ?", (name, os.getpid(), HOST))


def live_of(conn: sqlite3.Connection, names: list[str]) -> set[str]:
    """Those of ``names`` that a live process holds (this one included)."""
    marks = ",".join("?" * len(names))
    rows = conn.execute(f"select name, pid, host, heartbeat_at from locks where name in ({marks})",
                        list(names)).fetchall()
    return {name for name, pid, host, beat in rows if holder_alive(pid, host, beat)}
