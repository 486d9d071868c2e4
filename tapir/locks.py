"""Locks kept in the database, with a heartbeat.

One writer per run (``run:<id>``), one process computing a stage key at a
time (``stage:<key>``), and one process paying for an LLM call at a time
(``call:<cache key>``). A lock row names its holder (pid, host) and is
refreshed by a heartbeat thread; a lock whose holder died is taken over:
at once when the holder is a dead pid on this host (kill -9), after
``STALE_S`` seconds without a heartbeat otherwise.
"""

from __future__ import annotations

import threading
import time

from tapir.errors import TapirError
from tapir.store import locks as rows
from tapir.store.db import Store, utcnow
from tapir.store.locks import HOST, STALE_S, holder_alive  # noqa: F401  (where they used to live)

HEARTBEAT_S = 5.0


class LockHeld(TapirError):
    """Another live process holds the lock."""

    def __init__(self, name: str, pid: int, host: str, since: str):
        self.name, self.pid, self.host, self.since = name, pid, host, since
        what = name.split(":", 1)
        label = f"{what[0]} {what[1]}" if len(what) == 2 else name
        super().__init__(f"{label} is being written by pid {pid} on {host} since {since}; "
                         f"wait for it to finish (or pass --wait), or stop that process")


class Lock:
    """A named lock in ``store``'s ``locks`` table. Use :meth:`acquire`,
    :meth:`release`, or as a context manager (waits)."""

    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free or its holder is dead; False if a
        live process holds it (see :meth:`holder`)."""
        if not rows.claim(self.store.db.conn, self.name, utcnow()):
            return False
        self.held = True
        self._start_heartbeat()
        return True

    def holder(self) -> tuple[int, str, str] | None:
        return rows.holder(self.store.db.conn, self.name)

    def acquire(self, wait: bool = False, poll_s: float = 0.5, timeout_s: float | None = None) -> None:
        """Take the lock; without ``wait``, raise :class:`LockHeld` at once
        when a live process holds it."""
        started = time.monotonic()
        while not self.try_acquire():
            if not wait or (timeout_s is not None and time.monotonic() - started > timeout_s):
                holder = self.holder()
                if holder is None:
                    continue
                raise LockHeld(self.name, *holder)
            time.sleep(poll_s)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
            self._thread = None
        if self.held:
            rows.drop(self.store.db.conn, self.name)
            self.held = False

    def _start_heartbeat(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        path = self.store.path

        def beat():
            if path is None:
                return
            import sqlite3

            conn = sqlite3.connect(str(path), timeout=30)
            try:
                while not self._stop.wait(HEARTBEAT_S):
                    rows.beat(conn)  # every lock this process holds (its call claims too)
            finally:
                conn.close()

        self._thread = threading.Thread(target=beat, name=f"tapir-lock-{self.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> "Lock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

