"""A lean path for self-hosted OpenAI-compatible servers (vLLM, FastChat,
llama.cpp, Ollama's /v1, ...): the ``openai`` package's async client,
called directly.

For these servers litellm adds nothing but its per-call overhead (about
1.5-2 ms of CPU a call on this class of machine, measured in
benchmarks/bench_api_judging.py): the request is already in OpenAI format,
no price is known, and errors map the same way. The backend uses this path
for ``openai/<name>`` with an ``api_base`` unless ``transport: litellm`` is
set; everything else (retries, limits, accounting) is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

# Parameters an OpenAI-compatible chat endpoint takes; ``extra`` with other
# keys (litellm-specific ones) sends the call through litellm instead.
OPENAI_CHAT_PARAMS = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "user", "response_format", "reasoning_effort",
    "tools", "tool_choice", "parallel_tool_calls", "service_tier", "metadata", "max_completion_tokens",
    "extra_headers", "extra_body", "extra_query", "n", "modalities", "prediction", "store",
})

_clients: dict[tuple[Any, ...], Any] = {}


def usable(model_name: str, api_base: str | None, extra: dict[str, Any]) -> bool:
    """True when the direct path serves this model as litellm would."""
    return (bool(api_base) and model_name.startswith("openai/") and "api.openai.com" not in api_base
            and set(extra) <= OPENAI_CHAT_PARAMS)


def _client(api_base: str, api_key: str, timeout: float):
    """One async client per (server, key, timeout) on the running loop (keys hashed, never kept in clear)."""
    import openai

    loop = asyncio.get_running_loop()
    key = (id(loop), api_base, hashlib.sha256(api_key.encode()).hexdigest(), timeout)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = openai.AsyncOpenAI(base_url=api_base, api_key=api_key, timeout=timeout,
                                                    max_retries=0)
    return client


async def acompletion(kwargs: dict[str, Any]) -> Any:
    """Same keyword arguments as our litellm call; returns an OpenAI ChatCompletion."""
    kw = dict(kwargs)
    client = _client(kw.pop("api_base"), kw.pop("api_key", None) or "sk-no-key-needed", kw.pop("timeout"))
    for litellm_only in ("num_retries", "max_retries", "drop_params", "no-log"):
        kw.pop(litellm_only, None)
    kw["model"] = kw["model"].split("/", 1)[1]
    options: dict[str, Any] = {}
    if kw.get("extra_headers"):
        options["headers"] = kw.pop("extra_headers")
    if kw.get("extra_query"):
        options["params"] = kw.pop("extra_query")
    kw.pop("extra_headers", None)
    kw.pop("extra_query", None)
    kw.update(kw.pop("extra_body", None) or {})
    # The client's generic post (documented for endpoints the SDK lacks):
    # the body is sent as is, skipping ``create()``'s typed re-validation of
    # the messages, which costs about as much CPU as the rest of the call.
    from openai.types.chat import ChatCompletion

    return await client.post("/chat/completions", cast_to=ChatCompletion, body=kw, options=options)
