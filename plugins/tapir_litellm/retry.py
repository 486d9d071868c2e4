"""Retry policy for API calls: which failures are worth another attempt, and
how long to wait before it (exponential backoff with jitter, Retry-After
honoured, bounded in count and in total time)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# HTTP statuses that a later attempt can fix.
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529}
# Error texts that no retry fixes even when a provider maps them to a 5xx.
_PERMANENT_HINTS = ("missing credentials", "api_key", "api key", "authentication", "unauthorized")


class MalformedResponse(Exception):
    """The server answered 200 but the body is not a usable chat completion."""


@dataclass
class RetryPolicy:
    """``max_retries`` further attempts after the first, never waiting past
    ``max_seconds`` in all; waits grow ``base_seconds * 2**n`` up to
    ``cap_seconds``, each scaled by a random factor in [0.5, 1] (jitter)."""

    max_retries: int = 5
    max_seconds: float = 120.0
    base_seconds: float = 1.0
    cap_seconds: float = 30.0

    def wait(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_seconds)
        rng = rng or random
        return min(self.cap_seconds, self.base_seconds * (2**attempt)) * rng.uniform(0.5, 1.0)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any."""
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_retryable(exc: BaseException) -> bool:
    """True for rate limits, server errors, timeouts, dropped connections and
    malformed answers; False for requests that are wrong (4xx) or unauthorised."""
    import asyncio
    import json

    if isinstance(exc, (MalformedResponse, json.JSONDecodeError, asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    status = status_of(exc)
    if status in (401, 403) or any(h in text for h in _PERMANENT_HINTS):
        return False
    if status is not None:
        return status in RETRYABLE_STATUS
    name = type(exc).__name__.lower()
    return any(word in name for word in ("timeout", "connection", "ratelimit", "serviceunavailable",
                                         "internalserver", "apierror"))


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) response header."""
    headers = None
    response_headers = getattr(getattr(exc, "response", None), "headers", None)
    for source in (getattr(exc, "headers", None), getattr(exc, "litellm_response_headers", None), response_headers):
        if source:
            headers = source
            break
    if not headers:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return float(value) / 1000.0
        value = headers.get("retry-after")
        if value is not None:
            return float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date: fall back to our own backoff
    return None


_REFUSED_HINTS = ("connection refused", "connect call failed", "all connection attempts failed",
                  "cannot connect to host", "errno 111", "name or service not known", "nodename nor servname")


def classify(exc: BaseException) -> tuple[str, int | None]:
    """(kind, HTTP status) of a failed attempt. Kinds: ``Timeout``,
    ``ConnectionRefused``, ``ConnectionError``, ``AuthenticationError``
    (401), ``PermissionDenied`` (403), ``NotFound`` (404), ``BadRequest``
    (400, 413, 422), ``RateLimited`` (429), ``ServerError`` (5xx),
    ``MalformedResponse``, ``HTTPError`` (other statuses), or the exception's
    class name."""
    import asyncio
    import json

    name = type(exc).__name__
    lname = name.lower()
    text = str(exc).lower()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or "timeout" in lname:
        return "Timeout", None
    if isinstance(exc, (MalformedResponse, json.JSONDecodeError)):
        return "MalformedResponse", None
    # litellm reports a connection failure as an InternalServerError (HTTP 500)
    # over openai's APIConnectionError: no HTTP answer came, so look down the chain.
    chain = _chain(exc)
    if any(isinstance(e, ConnectionError) or "connect" in type(e).__name__.lower() for e in chain):
        refused = any(isinstance(e, ConnectionRefusedError) or any(h in str(e).lower() for h in _REFUSED_HINTS)
                      for e in chain)
        return ("ConnectionRefused" if refused else "ConnectionError"), None
    if any("timeout" in type(e).__name__.lower() for e in chain[1:]):
        return "Timeout", None
    status = status_of(exc)
    if status is None:
        return name, None
    if status == 401:
        return "AuthenticationError", status
    if status == 403:
        return "PermissionDenied", status
    if status == 404:
        return "NotFound", status
    if status in (400, 413, 422):
        return "BadRequest", status
    if status == 429:
        return "RateLimited", status
    if status >= 500:
        return "ServerError", status
    return "HTTPError", status


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """``exc`` and its causes (``__cause__`` / ``__context__``), outermost first."""
    out: list[BaseException] = []
    while exc is not None and len(out) < limit and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out
