"""Requests- and tokens-per-minute limits per model (``rpm`` / ``tpm``
options of the litellm backend).

One :class:`RateLimiter` per model name and limits, process-wide and on the
shared event loop (tapir_litellm.loop), so every thread, backend instance and
server of the model draws from the same allowance. Each limit is a token
bucket written as a *generic cell rate* schedule without burst: a request
may start when the schedule's next free time has come; it then moves the
schedule on by its cost / rate, so no minute holds more than the limit. A request's token
cost is estimated before sending (prompt characters / 4 + max_tokens) and
corrected with the reply's usage, so tpm follows what was really used.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

_limiters: dict[tuple, "RateLimiter"] = {}


class _Schedule:
    """One limit of ``per_minute`` units, with no burst: a request may start
    once the previous ones' units have drained at the rate, so any minute
    holds at most ``per_minute`` units (a token-bucket of one request)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0  # units per second
        self.next_free = 0.0

    def delay(self, now: float) -> float:
        return max(0.0, self.next_free - now)

    def take(self, now: float, units: float) -> None:
        self.next_free = max(self.next_free, now) + units / self.rate

    def give_back(self, units: float) -> None:
        self.next_free -= units / self.rate


class RateLimiter:
    """``rpm`` requests and ``tpm`` tokens per minute (either may be None)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.rpm = _Schedule(rpm) if rpm else None
        self.tpm = _Schedule(tpm) if tpm else None
        self._lock: asyncio.Lock | None = None
        self.waited_s = 0.0
        self.requests = 0

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of about ``tokens`` tokens may start; returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                delay = max(s.delay(now) for s in (self.rpm, self.tpm) if s is not None)
                if delay <= 0:
                    break
                waited += delay
                await asyncio.sleep(delay)
            if self.rpm is not None:
                self.rpm.take(now, 1)
            if self.tpm is not None:
                self.tpm.take(now, tokens)
        self.waited_s += waited
        self.requests += 1
        return waited

    def settle(self, estimated: int, used: int | None) -> None:
        """Correct the token schedule once a reply says how many tokens it used."""
        if self.tpm is not None and used is not None:
            self.tpm.give_back(estimated - used)


def limiter(model_name: str, rpm: float | None, tpm: float | None) -> RateLimiter | None:
    """The process-wide limiter of ``model_name`` at these limits (None when there is no limit)."""
    if not rpm and not tpm:
        return None
    key = (model_name, rpm, tpm)
    found = _limiters.get(key)
    if found is None:
        found = _limiters[key] = RateLimiter(rpm, tpm)
    return found


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """Tokens a request may use: its prompt (about 4 characters a token) plus ``max_tokens``."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return chars // 4 + 4 * len(messages) + int(max_tokens or 0)
