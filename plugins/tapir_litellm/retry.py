"""Retry policy for API calls: what a failure is (:func:`failure_of`), which
failures are worth another attempt, and how long to wait before it
(exponential backoff with jitter, Retry-After honoured, bounded in count and
in total time).

Every failure has a *kind*, by what helps:

* ``transient``: a rate limit (429), a server error (5xx), a timeout, a
  dropped connection. Another attempt may succeed: retried with backoff.
* ``permanent``: out of quota or credit (``insufficient_quota``, 402), a
  refused key (401), a key without access (403), no such model (404), a
  prompt over the context length. No attempt fixes it, and every other
  request of the run would fail the same way: never retried, and the stage
  stops at once (see tapir.errors.FAILURE_FIXES for the fix of each cause).
* ``content``: this request's reply or request is unusable (a malformed
  reply, a request rejected as invalid). Only this item fails (a malformed
  reply is still asked again: a new sample often parses).

FastChat's openai_api_server answers every error with HTTP 400 and one of
its own codes in the body (``fastchat.constants.ErrorCode``): the code, not
the status, says which of these it is (:data:`FASTCHAT_CODES`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# HTTP statuses that a later attempt can fix.
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529}
# Error texts that no retry fixes even when a provider maps them to a 5xx.
_PERMANENT_HINTS = ("missing credentials", "api_key", "api key", "authentication", "unauthorized")


TRANSIENT, PERMANENT, CONTENT = "transient", "permanent", "content"

# Texts that mark a 429 (or 400/402/403) as out of quota or credit rather than
# a rate limit. Not a bare "quota exceeded": Google says that of per-minute limits.
_QUOTA_HINTS = ("insufficient_quota", "exceeded your current quota", "check your plan and billing",
                "credit balance is too low", "billing_hard_limit", "billing hard limit", "insufficient credit",
                "insufficient_balance", "payment required")
_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "context length", "context window",
                  "prompt is too long", "input is too long", "too many input tokens")
_MODEL_HINTS = ("model_not_found", "does not exist", "no such model", "unknown model", "model not found")

# FastChat's error codes (fastchat/constants.py, fschat 0.2.36), all sent with
# HTTP 400. Those left out (40001 validation, 40302 a parameter out of range)
# are this request's fault: a bad request, as the status says.
FASTCHAT_CODES = {
    "40101": (PERMANENT, "auth"), "40102": (PERMANENT, "auth"), "40103": (PERMANENT, "forbidden"),
    "40301": (PERMANENT, "model_not_found"), "40303": (PERMANENT, "context_length"),
    "42901": (TRANSIENT, "rate_limit"), "42902": (PERMANENT, "quota"), "42903": (TRANSIENT, "server"),
    # internal error, CUDA out of memory, gradio errors, no worker, worker timeout
    **{str(code): (TRANSIENT, "server") for code in range(50001, 50007)},
}


@dataclass(frozen=True)
class Failure:
    """What a failed attempt was: ``kind`` (transient | permanent | content),
    ``cause`` (rate_limit, server, timeout, connection, quota, auth,
    forbidden, model_not_found, context_length, malformed, bad_request,
    error) and the HTTP status when there was one."""

    kind: str
    cause: str
    status: int | None = None

    @property
    def retryable(self) -> bool:
        return self.kind == TRANSIENT or self.cause == "malformed"


def failure_of(exc: BaseException) -> Failure:
    """The kind and cause of a failed attempt (see the module docstring)."""
    import asyncio
    import json

    text = " ".join(str(e) for e in _chain(exc)).lower() + " " + _error_code(exc)
    if isinstance(exc, (MalformedResponse, json.JSONDecodeError)):
        return Failure(CONTENT, "malformed")
    name, status = classify(exc)
    coded = _fastchat_code(exc, status)
    if coded is not None:
        return Failure(*FASTCHAT_CODES[coded], status)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or name == "Timeout":
        return Failure(TRANSIENT, "timeout")
    if name in ("ConnectionRefused", "ConnectionError"):
        return Failure(TRANSIENT, "connection")
    if any(h in text for h in _QUOTA_HINTS) and status in (None, 400, 402, 403, 429):
        return Failure(PERMANENT, "quota", status)
    if status == 402:
        return Failure(PERMANENT, "quota", status)
    if status == 401 or (status in (None, 400, 500) and any(h in text for h in _PERMANENT_HINTS)):
        return Failure(PERMANENT, "auth", status)
    if status == 403:
        return Failure(PERMANENT, "forbidden", status)
    if status == 404:
        return Failure(PERMANENT, "model_not_found", status)
    if status in (None, 400, 413, 422) and any(h in text for h in _CONTEXT_HINTS):
        return Failure(PERMANENT, "context_length", status)
    if status in (400, 422) and any(h in text for h in _MODEL_HINTS) and "model" in text:
        return Failure(PERMANENT, "model_not_found", status)
    if status == 429:
        return Failure(TRANSIENT, "rate_limit", status)
    if status is not None and status >= 500:
        return Failure(TRANSIENT, "server", status)
    if status in RETRYABLE_STATUS:
        return Failure(TRANSIENT, "server", status)
    if status is not None:
        return Failure(CONTENT, "bad_request", status)
    lname = type(exc).__name__.lower()
    if any(word in lname for word in ("ratelimit",)):
        return Failure(TRANSIENT, "rate_limit")
    if any(word in lname for word in ("timeout", "connection", "serviceunavailable", "internalserver", "apierror")):
        return Failure(TRANSIENT, "server")
    return Failure(CONTENT, "error")


def _error_code(exc: BaseException) -> str:
    """The provider's error code or type (``insufficient_quota``, ...) when the exception carries one."""
    out = []
    for e in _chain(exc):
        for attr in ("code", "type"):
            value = getattr(e, attr, None)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                out.append(str(value).lower())
        body = getattr(e, "body", None)
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict):
                out += [str(error.get(k)).lower() for k in ("code", "type") if error.get(k)]
    return " ".join(out)


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
    malformed answers; False for permanent failures (quota, key, model,
    context length) and requests that are wrong (4xx)."""
    return failure_of(exc).retryable


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
    coded = _fastchat_code(exc, status)
    if coded is not None:
        return _KIND_OF_CAUSE.get(FASTCHAT_CODES[coded][1], "BadRequest"), status
    if status in (400, 413, 422):
        return "BadRequest", status
    if status == 429:
        return "RateLimited", status
    if status >= 500:
        return "ServerError", status
    return "HTTPError", status


_KIND_OF_CAUSE = {"auth": "AuthenticationError", "forbidden": "PermissionDenied", "model_not_found": "NotFound",
                  "rate_limit": "RateLimited", "server": "ServerError"}


def _fastchat_code(exc: BaseException, status: int | None) -> str | None:
    """FastChat's error code of an HTTP 400 answer, when it carries one."""
    if status != 400:
        return None
    return next((c for c in _error_code(exc).split() if c in FASTCHAT_CODES), None)


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """``exc`` and its causes (``__cause__`` / ``__context__``), outermost first."""
    out: list[BaseException] = []
    while exc is not None and len(out) < limit and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out
