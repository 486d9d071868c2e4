"""How many requests a server gets at once, and when an attempt has waited
too long: a :class:`ServerGate` per server (process-wide, shared by every
backend of the model).

A self-hosted server (FastChat, vLLM, llama.cpp) generates at most K
requests at once and queues the rest. Sending more than K gains nothing: the
extra requests wait in its queue, and a per-attempt timeout that starts at
sending gives up on them while they wait. The server still generates them
(nothing tells it the client left), and the retry sends them again: paid
twice, and the queue grows. Two things prevent that:

* **A timeout that knows about queues.** An attempt's clock (re)starts
  whenever the server answers a request sent before it: a server that
  answers in order has moved its queue, so the attempt is waiting its turn,
  not hung. ("Before" allows for requests sent at about the same moment
  reaching the server in another order: up to ``REORDER_SHARE`` of the
  timeout, at most a second, after it.) An attempt is given up after ``timeout`` seconds in which no
  earlier request was answered (then, in a FIFO server, it is being served
  and took too long, or the server is stuck), or at ``timeout *
  QUEUE_CAP`` in all.
* **Adaptive concurrency** (``adaptive_concurrency``, on by default). The
  gate's limit starts at the configured concurrency and follows the
  server's latency: an answer slower than ``QUEUE_TOLERANCE`` times the
  fastest recent one *and* slower than ``NEAR_TIMEOUT`` of the timeout
  means requests queue, and the limit drops in proportion (limit x
  tolerance x fastest / this latency, as in TCP Vegas or Netflix's gradient
  limiter; at most halved by one answer); a timeout halves it. Only attempts sent under the current
  limit lower it again (the backlog sent before is already accounted for,
  as TCP lowers its window once per round trip). Answers near the fastest
  add 1/limit (one
  more request per round trip) up to the configured concurrency. A server
  whose answers stay well below the timeout is never slowed down, however
  much their lengths vary.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable

QUEUE_TOLERANCE = 1.5  # latency this many times the fastest recent answer: requests are queueing
NEAR_TIMEOUT = 0.25  # ... and above this share of the timeout: worth lowering the concurrency
QUEUE_CAP = 10.0  # an attempt is given up after timeout * QUEUE_CAP in all, queued or not
WINDOW = 64  # recent answers the fastest latency is taken from
REORDER_SHARE = 0.1  # requests sent this share of the timeout after an attempt may still reach the server first


@dataclass(eq=False)
class Ticket:
    """One attempt in flight on a server."""

    seq: int
    sent: float
    clock: float  # when its timeout clock last (re)started


class ServerGate:
    """The concurrency limit and the queue-aware attempt clock of one server."""

    def __init__(self, ceiling: int, timeout: float, adaptive: bool = True):
        self.ceiling = int(ceiling)
        self.timeout = float(timeout)
        self.adaptive = adaptive
        self.limit = float(ceiling)
        self.in_flight: dict[int, Ticket] = {}
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.peak = 0
        self.lowered = 0  # times the limit went down
        self.lowest = self.ceiling  # the lowest limit it went down to
        self._seq = 0
        self._lowered_at = float("-inf")  # when the limit last went down
        self._waiters: deque[asyncio.Future] = deque()  # requests waiting for a slot, first come first
        self._woken = 0  # waiters handed a slot that have not run yet

    @property
    def allowed(self) -> int:
        """Requests it may have in flight now."""
        return max(1, min(self.ceiling, int(self.limit)))

    async def acquire(self) -> Ticket:
        """A slot, first come first: a request queues behind those already
        waiting, and a release hands its slot to the first of them."""
        if self._waiters or len(self.in_flight) + self._woken >= self.allowed:
            front = False
            while True:
                waiter = asyncio.get_running_loop().create_future()
                (self._waiters.appendleft if front else self._waiters.append)(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._woken -= 1
                        self._wake()  # woken, then cancelled: its slot goes to the next in line
                    raise
                self._woken -= 1
                if len(self.in_flight) < self.allowed:
                    break
                front = True  # the limit went down meanwhile: wait again, first in line
        return self.enter()

    def release(self, ticket: Ticket, outcome: str, latency: float | None = None) -> None:
        """:meth:`leave`, then hand the free slots to as many waiting requests,
        first come first (waking every waiter on every release cost O(waiting)
        a release: minutes of CPU with 52K requests queued). Synchronous: the
        caller's result is handed on before any of them runs (a permanent
        failure stops them from being sent)."""
        self.leave(ticket, outcome, latency)
        self._wake()

    def _wake(self) -> None:
        free = self.allowed - len(self.in_flight) - self._woken
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1  # its slot is kept for it until it runs
                free -= 1

    def enter(self) -> Ticket:
        """Count an attempt as sent (a pool that picks servers itself calls this)."""
        self._seq += 1
        now = time.monotonic()
        ticket = Ticket(self._seq, now, now)
        self.in_flight[ticket.seq] = ticket
        self.peak = max(self.peak, len(self.in_flight))
        return ticket

    def leave(self, ticket: Ticket, outcome: str, latency: float | None = None) -> None:
        """An attempt ended. ``outcome``: ``answered`` (in ``latency`` seconds),
        ``refused`` (the server answered with an error status), ``timeout``
        (we gave up on it), or ``gone`` (no answer: connection failed, not
        sent, cancelled)."""
        now = time.monotonic()
        self.in_flight.pop(ticket.seq, None)
        if outcome in ("answered", "refused"):
            reorder = min(1.0, REORDER_SHARE * self.timeout)
            for other in self.in_flight.values():
                if ticket.sent <= other.sent + reorder:
                    other.clock = now  # the server's queue ahead of it moved
        if self.adaptive:
            self._adapt(ticket, latency if outcome == "answered" else None, outcome == "timeout")

    def _adapt(self, ticket: Ticket, latency: float | None, timed_out: bool) -> None:
        before = self.allowed
        current = ticket.sent >= self._lowered_at  # sent under the current limit
        if timed_out:
            if current:
                self.limit = max(1.0, self.limit / 2)
        elif latency is not None:
            self.recent.append(latency)
            fastest = min(self.recent)
            if latency > QUEUE_TOLERANCE * fastest and latency > NEAR_TIMEOUT * self.timeout:
                if current:  # in proportion, at most halved by one answer
                    gradient = max(0.5, QUEUE_TOLERANCE * fastest / latency)
                    self.limit = max(1.0, min(self.limit, self.limit * gradient))
            elif latency <= QUEUE_TOLERANCE * fastest and self.limit < self.ceiling:
                self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        if self.allowed < before:
            self._lowered_at = time.monotonic()
            self.lowered += 1
            self.lowest = min(self.lowest, self.allowed)

    def remaining(self, ticket: Ticket) -> float:
        """Seconds this attempt may still wait."""
        now = time.monotonic()
        return min(ticket.clock + self.timeout, ticket.sent + self.timeout * QUEUE_CAP) - now

    async def within(self, awaitable: Awaitable[Any], ticket: Ticket) -> Any:
        """Await ``awaitable`` until it answers or :meth:`remaining` runs out
        (then ``asyncio.TimeoutError``; the request is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                left = self.remaining(ticket)
                if left <= 0:
                    raise asyncio.TimeoutError(f"no answer within {self.timeout:g}s")
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    def stats(self) -> dict[str, Any]:
        return {"limit": self.allowed, "ceiling": self.ceiling, "in_flight": len(self.in_flight),
                "peak": self.peak, "lowered": self.lowered, "lowest": self.lowest,
                "fastest_s": round(min(self.recent), 3) if self.recent else None}


_gates: dict[tuple, ServerGate] = {}


def gate(model_id: str, url: str | None, ceiling: int, timeout: float, adaptive: bool = True) -> ServerGate:
    """The process-wide gate of one server of ``model_id`` (call on the API loop)."""
    key = (model_id, url, int(ceiling), float(timeout), bool(adaptive))
    found = _gates.get(key)
    if found is None:
        found = _gates[key] = ServerGate(ceiling, timeout, adaptive)
    return found


def gates_of(model_id: str) -> dict[str, ServerGate]:
    """The gates of ``model_id``'s servers (by URL)."""
    return {key[1] or "": g for key, g in _gates.items() if key[0] == model_id}
