"""Several servers for one model: load spread by per-server concurrency,
failover when one dies.

Each attempt takes a slot on the least loaded healthy server (in flight /
its concurrency). A server whose attempt fails for a server reason
(connection refused or broken, timeout, 5xx) is taken out for a cool-down
that doubles with each failure in a row (0.5 s up to 30 s); its requests are
retried on the others at once (no backoff while another server is up). After
the cool-down it gets one probe request at a time until one succeeds, then
its full concurrency again. When every server is down, requests wait for the
server back soonest, one probe at a time, paced by the retry policy alone.
``limit_of(url)``, when given, caps a server below its concurrency (the
adaptive limit of its gate, see adaptive.py: a server that queues gets
fewer, and the others take the rest).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

SERVER_FAILURES = frozenset({"Timeout", "ConnectionRefused", "ConnectionError", "ServerError"})


@dataclass
class Server:
    url: str
    capacity: int
    in_flight: int = 0
    ok: int = 0
    failed: int = 0
    failures_in_a_row: int = 0
    down_until: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)

    def limit(self) -> int:
        return 1 if self.failures_in_a_row else self.capacity  # a probe at a time after a failure


class ServerPool:
    def __init__(self, servers: list[tuple[str, int]], cooldown_base: float = 0.5, cooldown_cap: float = 30.0,
                 limit_of: Callable[[str], int] | None = None):
        self.servers = [Server(url, int(capacity)) for url, capacity in servers]
        self.limit_of = limit_of
        self.cooldown_base = cooldown_base
        self.cooldown_cap = cooldown_cap
        self._cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def healthy(self, now: float | None = None) -> list[Server]:
        now = time.monotonic() if now is None else now
        return [s for s in self.servers if s.down_until <= now]

    async def acquire(self) -> Server:
        async with self.cond:
            while True:
                now = time.monotonic()
                healthy = self.healthy(now)
                # All down: no server to fail over to, so the cool-down would only add
                # to the retry policy's own backoff; probe the one back soonest.
                pool = healthy or sorted(self.servers, key=lambda s: s.down_until)[:1]
                free = [s for s in pool if s.in_flight < self._limit(s)]
                if free:
                    server = min(free, key=lambda s: (s.in_flight / s.capacity, -s.capacity))
                    server.in_flight += 1
                    return server
                later = [s.down_until - now for s in self.servers if s.down_until > now]
                try:
                    await asyncio.wait_for(self.cond.wait(), min(later) if later else None)
                except asyncio.TimeoutError:
                    pass

    def _limit(self, server: Server) -> int:
        own = server.limit()
        return min(own, self.limit_of(server.url)) if self.limit_of is not None else own

    async def release(self, server: Server, kind: str | None) -> None:
        """``kind``: None for a success, else the failure kind (see retry.classify)."""
        async with self.cond:
            server.in_flight -= 1
            if kind is None:
                server.ok += 1
                server.failures_in_a_row = 0
            else:
                server.failed += 1
                server.kinds[kind] = server.kinds.get(kind, 0) + 1
                if kind in SERVER_FAILURES and server.down_until <= time.monotonic():
                    # (requests that were in flight when it died count once)
                    server.failures_in_a_row += 1
                    wait = min(self.cooldown_cap, self.cooldown_base * 2 ** (server.failures_in_a_row - 1))
                    server.down_until = max(server.down_until, time.monotonic() + wait)
            # Wake as many waiters as there are free slots, not all of them: a
            # 52K stage would otherwise re-check every waiter on every release.
            free = sum(max(0, self._limit(s) - s.in_flight) for s in self.servers)
            self.cond.notify(max(1, free))

    def other_server_up(self, server: Server) -> bool:
        return any(s is not server for s in self.healthy())

    def stats(self) -> dict[str, dict]:
        now = time.monotonic()
        return {s.url: {"ok": s.ok, "failed": s.failed, "in_flight": s.in_flight, "capacity": s.capacity,
                        "down": s.down_until > now, "failures": dict(s.kinds)} for s in self.servers}
