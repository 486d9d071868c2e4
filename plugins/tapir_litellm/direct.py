"""A lean path for self-hosted OpenAI-compatible servers (vLLM, FastChat,
llama.cpp, Ollama's /v1, ...): one ``aiohttp`` session per server, the
request body written as JSON and the answer read back as a plain dict.

For these servers litellm adds nothing but its per-call overhead: the request
is already in OpenAI format, no price is known, and errors map the same way.
The ``openai`` SDK over httpx costs about 1.4 ms of CPU a call on this class
of machine, aiohttp about 0.35 ms (benchmarks/bench_api_judging.py), which is
what keeps a judge stage at concurrency 16 near the ideal. aiohttp comes with
litellm (the ``api`` extra). The backend uses this path for ``openai/<name>``
with an ``api_base`` unless ``transport: litellm`` is set; everything else
(retries, limits, accounting, failover) is shared.
"""

from __future__ import annotations

import asyncio
import atexit
import json
from typing import Any

# Parameters an OpenAI-compatible chat endpoint takes; ``extra`` with other
# keys (litellm-specific ones) sends the call through litellm instead.
OPENAI_CHAT_PARAMS = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "user", "response_format", "reasoning_effort",
    "tools", "tool_choice", "parallel_tool_calls", "service_tier", "metadata", "max_completion_tokens",
    "extra_headers", "extra_body", "extra_query", "n", "modalities", "prediction", "store",
})
_LITELLM_ONLY = ("num_retries", "max_retries", "drop_params", "no-log")

_sessions: dict[tuple[int, str], Any] = {}
_proxies: dict[str, str | None] = {}


class HTTPStatusError(Exception):
    """The server answered with an error status."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers or {}
        self.code = code  # the provider's error code (insufficient_quota, model_not_found, ...)


class ServerUnreachable(ConnectionError):
    """No connection could be made (refused, unknown host, reset before an answer)."""


def usable(model_name: str, api_base: str | None, extra: dict[str, Any]) -> bool:
    """True when the direct path serves this model as litellm would."""
    return (bool(api_base) and model_name.startswith("openai/") and "api.openai.com" not in api_base
            and set(extra) <= OPENAI_CHAT_PARAMS)


def _session():
    """One aiohttp session per event loop (connections pooled per host; our
    server gates (adaptive.py), not the connector, limit what is in flight)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    key = (id(loop), "")
    session = _sessions.get(key)
    if session is None or session.closed:
        if not _sessions:
            atexit.register(_close_sessions)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        # trust_env=False: with it aiohttp looks up proxies and .netrc in a
        # worker thread on EVERY request (two thread hops, ~0.5 ms of GIL
        # traffic a call); the proxy is looked up once per server instead.
        session = _sessions[key] = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                         cookie_jar=aiohttp.DummyCookieJar(),
                                                         json_serialize=json.dumps)
        session._tapir_loop = loop
    return session


def _close_sessions() -> None:
    """Close the sessions on their loops at exit (no 'Unclosed client session' noise)."""
    for session in list(_sessions.values()):
        loop = getattr(session, "_tapir_loop", None)
        if session.closed or loop is None or loop.is_closed():
            continue
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)
            else:
                loop.run_until_complete(session.close())
        except Exception:
            pass
    _sessions.clear()


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP(S)_PROXY, NO_PROXY), looked up once per server."""
    base = url.split("/chat/completions")[0]
    if base not in _proxies:
        from urllib.request import getproxies, proxy_bypass

        from yarl import URL

        host = URL(base).host or ""
        proxies = getproxies()
        scheme = URL(base).scheme
        _proxies[base] = None if not proxies.get(scheme) or proxy_bypass(host) else proxies[scheme]
    return _proxies[base]


def body_of(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Our litellm-style keyword arguments -> (JSON body, extra headers, query params)."""
    kw = dict(kwargs)
    for name in ("api_base", "api_key", "timeout", *_LITELLM_ONLY):
        kw.pop(name, None)
    kw["model"] = kw["model"].split("/", 1)[1]
    headers = kw.pop("extra_headers", None) or {}
    query = kw.pop("extra_query", None) or {}
    kw.update(kw.pop("extra_body", None) or {})
    return kw, headers, query


async def acompletion(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Same keyword arguments as our litellm call; returns the chat completion as a dict."""
    import aiohttp

    body, extra_headers, query = body_of(kwargs)
    base, _, base_query = kwargs["api_base"].partition("?")  # a key may ride in the URL (?api-key=...)
    if base_query:
        from urllib.parse import parse_qsl

        query = {**dict(parse_qsl(base_query)), **query}
    url = base.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {kwargs.get('api_key') or 'sk-no-key-needed'}",
               **extra_headers}
    timeout = aiohttp.ClientTimeout(total=float(kwargs["timeout"]))
    try:
        async with _session().post(url, data=json.dumps(body).encode(), headers=headers, params=query or None,
                                   timeout=timeout, proxy=_proxy_for(url)) as response:
            raw = await response.read()
            status = response.status
            if status >= 400:
                raise HTTPStatusError(status, _error_text(raw, status),
                                      {k.lower(): v for k, v in response.headers.items()}, _error_code(raw))
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from exc
    except aiohttp.ClientPayloadError as exc:
        raise ServerUnreachable(f"connection broke mid-answer: {exc}") from exc
    return json.loads(raw)


def _error_code(raw: bytes) -> str | None:
    """OpenAI's ``error.code`` (or ``error.type``) of an error body, or the
    body's own ``code`` (FastChat's ``{"object": "error", "code": 40301}``), if any."""
    try:
        data = json.loads(raw)
        error = data.get("error", data)
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(code) if code else None
    return None


def _error_text(raw: bytes, status: int) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}`` or the raw text)."""
    text = raw[:2000].decode("utf-8", "replace")
    try:
        data = json.loads(raw)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict):
            text = str(error.get("message") or error)
        elif isinstance(error, str):
            text = error
    except ValueError:
        pass
    return f"HTTP {status}: {text}"
