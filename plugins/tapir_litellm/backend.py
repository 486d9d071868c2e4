"""The litellm backend: any ``provider/model`` litellm can reach, called
concurrently with retries, token and cost accounting.

``LiteLLMBackend("openai/gpt-4o-mini")`` reads ``OPENAI_API_KEY`` from the
environment (litellm does that per provider). For an OpenAI-compatible
server (vLLM, FastChat, Ollama's /v1, ...) use ``openai/<served name>`` with
``api_base``. See docs/backends-api.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import random
import time
import warnings
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.roles import Completion, GenerationRequest, OnResult, TokenLogprob

from tapir_litellm import direct
from tapir_litellm.loop import get_loop, semaphore
from tapir_litellm.retry import MalformedResponse, RetryPolicy, is_retryable, retry_after_of, status_of

_PLACEHOLDER_KEY = "sk-no-key-needed"  # local OpenAI-compatible servers accept any key
_litellm = None
_no_cost_models: set[str] = set()  # models litellm has no price for (skip the look-up)


def _import_litellm():
    """Import litellm once, offline and quiet, with its own retries off."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm

        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        litellm.num_retries = 0
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # litellm's typed dicts make pydantic warn on first use; not actionable for our users.
        warnings.filterwarnings("ignore", message=r".*using the `ReadOnly` qualifier.*", category=UserWarning)
        _litellm = litellm
    return _litellm


class LiteLLMBackend:
    """A :class:`tapir.roles.Backend` over ``litellm.acompletion``.

    Options:

    ``api_base``
        Base URL of the server (``http://host:8000/v1`` for OpenAI-compatible ones).
    ``api_key_env``
        Name of the environment variable holding the key (default: litellm's
        per-provider variable, e.g. ``OPENAI_API_KEY``). The key itself is
        never stored or logged.
    ``concurrency``
        Requests in flight to this model, shared by every backend of the same
        ``model_id`` in the process (default 8).
    ``timeout``
        Seconds per attempt (default 60).
    ``max_retries`` / ``retry_max_seconds``
        Further attempts after the first (default 5) and the most seconds one
        request may spend waiting between attempts (default 120).
    ``retry_base_seconds`` / ``retry_cap_seconds``
        First backoff wait (default 1) and the longest one (default 30).
    ``extra``
        A dict passed through to ``litellm.acompletion`` (e.g.
        ``{"reasoning_effort": "low"}``); it enters the model id as a hash.
    ``transport``
        ``auto`` (default): ``openai/<name>`` with an ``api_base`` (a
        self-hosted OpenAI-compatible server) is called with the ``openai``
        async client directly, which saves litellm's per-call overhead;
        everything else goes through ``litellm.acompletion``. ``litellm``:
        always litellm.
    """

    def __init__(
        self,
        model_name: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        retry_max_seconds: float = 120.0,
        retry_base_seconds: float = 1.0,
        retry_cap_seconds: float = 30.0,
        extra: dict[str, Any] | None = None,
        transport: str = "auto",
        **unknown: Any,
    ):
        if unknown:
            raise TapirError(
                f"litellm backend for '{model_name}': unknown option(s) {', '.join(sorted(unknown))}. "
                "Known: api_base, api_key_env, concurrency, timeout, max_retries, retry_max_seconds, "
                "retry_base_seconds, retry_cap_seconds, extra (a dict passed to litellm), transport."
            )
        if transport not in ("auto", "litellm"):
            raise TapirError(f"litellm backend for '{model_name}': transport must be 'auto' or 'litellm', "
                             f"got {transport!r}")
        if int(concurrency) < 1:
            raise TapirError(f"litellm backend for '{model_name}': concurrency must be >= 1, got {concurrency}")
        if api_key_env and api_key_env not in os.environ:
            raise TapirError(
                f"litellm backend for '{model_name}': environment variable {api_key_env} (named by api_key_env) "
                f"is not set. Export it before running, e.g. `export {api_key_env}=...`."
            )
        self.model_name = model_name
        self.api_base = api_base.rstrip("/") if api_base else None
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.policy = RetryPolicy(int(max_retries), float(retry_max_seconds), float(retry_base_seconds),
                                  float(retry_cap_seconds))
        self.extra = dict(extra or {})
        model_id = f"litellm:{model_name}"
        if self.api_base:
            model_id += f"@{self.api_base}"
        if self.extra:
            digest = hashlib.sha256(json.dumps(self.extra, sort_keys=True, default=str).encode()).hexdigest()
            model_id += f"#{digest[:12]}"
        self.model_id = model_id
        self.transport = "openai" if transport == "auto" and direct.usable(model_name, self.api_base, self.extra) \
            else "litellm"
        self._rng = random.Random()

    def __repr__(self) -> str:  # never shows a key
        return f"LiteLLMBackend({self.model_id!r}, concurrency={self.concurrency})"

    # -- the Backend protocol ----------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        """Answer every request concurrently (at most ``concurrency`` in
        flight); ``on_result(i, completion)`` runs in this thread as each
        finishes. Failures come back as ``Completion(error=...)``."""
        results: list[Completion | None] = [None] * len(requests)
        if not requests:
            return []
        if self.transport == "litellm":
            _import_litellm()
        done: queue.SimpleQueue = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._run_all(list(requests), done), get_loop())
        try:
            received = 0
            while received < len(requests):
                try:
                    i, completion = done.get(timeout=1.0)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    if future.done():
                        future.result()  # re-raises a crash of the loop side
                        break
                    continue
                received += 1
                results[i] = completion
                if on_result is not None:
                    on_result(i, completion)
            future.result()
        except BaseException:
            future.cancel()
            raise
        return [r if r is not None else Completion(error="no result") for r in results]

    # -- on the event loop --------------------------------------------------
    async def _run_all(self, requests: list[GenerationRequest], done: queue.SimpleQueue) -> None:
        sem = semaphore(self.model_id, self.concurrency)

        async def one(i: int, request: GenerationRequest) -> None:
            try:
                completion = await self._call_with_retries(request, sem)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let one request break the batch
                completion = Completion(error=self._clean(f"{type(exc).__name__}: {exc}"))
            done.put((i, completion))

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    async def _call_with_retries(self, request: GenerationRequest, sem: asyncio.Semaphore) -> Completion:
        call = direct.acompletion if self.transport == "openai" else None
        if call is None:
            litellm = _import_litellm()

            async def call(kw: dict[str, Any]) -> Any:
                return await litellm.acompletion(**kw)

        kwargs = self._kwargs(request)
        started: float | None = None  # from the first attempt, not from queueing for a slot
        waited = 0.0
        attempt = 0
        while True:
            try:
                async with sem:
                    if started is None:
                        started = time.perf_counter()
                    response = await _within(call(kwargs), self.timeout * 1.5 + 5)
                completion = self._to_completion(response)
                completion.latency_s = time.perf_counter() - started
                return completion
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                started = started or time.perf_counter()
                error = self._describe(exc, attempt)
                if not is_retryable(exc) or attempt >= self.policy.max_retries:
                    return Completion(error=error, latency_s=time.perf_counter() - started)
                delay = self.policy.wait(attempt, retry_after_of(exc), self._rng)
                if waited + delay > self.policy.max_seconds:
                    return Completion(error=f"{error} (retry time budget of {self.policy.max_seconds:g}s spent)",
                                      latency_s=time.perf_counter() - started)
                waited += delay
                attempt += 1
                await asyncio.sleep(delay)

    # -- helpers ------------------------------------------------------------
    def _kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": request.messages,
            "max_tokens": p.max_new_tokens,
            "temperature": float(p.temperature),
            "timeout": self.timeout,
            "num_retries": 0,  # ours are the only retries
            "max_retries": 0,  # ... including the openai SDK's
            "drop_params": True,  # a provider without e.g. logprobs answers without them
            "no-log": True,  # no litellm logging callbacks (we record calls ourselves; cheaper)
        }
        if p.temperature > 0 and p.top_p != 1.0:
            kwargs["top_p"] = float(p.top_p)
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.temperature > 0:  # distinct, reproducible samples (see GenerationParams.sample_seed)
            kwargs["seed"] = p.sample_seed(request.sample)
        if p.top_logprobs > 0:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = int(p.top_logprobs)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self._api_key()
        if key:
            kwargs["api_key"] = key
        kwargs.update(self.extra)
        return kwargs

    def _api_key(self) -> str | None:
        """The key, read from the environment at call time (never kept)."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        if self.api_base and self.model_name.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            return _PLACEHOLDER_KEY
        return None

    def _clean(self, text: str) -> str:
        """An error text with the API key (if any) cut out."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        for secret in filter(None, (key, os.environ.get("OPENAI_API_KEY"))):
            if len(secret) >= 4:
                text = text.replace(secret, "<redacted>")
        return text[:2000]

    def _describe(self, exc: BaseException, attempt: int) -> str:
        status = status_of(exc)
        kind = type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError):
            kind, text = "Timeout", f"no answer within {self.timeout:g}s"
        else:
            text = str(exc)
        prefix = f"{kind}" + (f" (HTTP {status})" if status else "")
        return self._clean(f"{prefix} after {attempt + 1} attempt(s): {text}")

    def _to_completion(self, response: Any) -> Completion:
        choices = _get(response, "choices")
        if not choices:
            raise MalformedResponse("response has no choices")
        choice = choices[0]
        message = _get(choice, "message")
        text = _get(message, "content")
        if not isinstance(text, str):
            raise MalformedResponse("response message has no text content")
        usage = _get(response, "usage")
        return Completion(
            text=text,
            logprobs=_logprobs(_get(choice, "logprobs")),
            prompt_tokens=_get(usage, "prompt_tokens"),
            completion_tokens=_get(usage, "completion_tokens"),
            cost=self._cost(response),
        )

    def _cost(self, response: Any) -> float | None:
        """USD cost from litellm's price map (litellm stamps it on the
        response); None for models it has no price for and on the direct
        OpenAI-compatible path (self-hosted servers have no price)."""
        hidden = getattr(response, "_hidden_params", None)
        if not isinstance(hidden, dict):
            return None
        if "response_cost" in hidden:
            cost = hidden["response_cost"]
            return float(cost) if cost is not None else None
        if self.model_name in _no_cost_models:
            return None
        try:
            return float(_import_litellm().completion_cost(completion_response=response))
        except Exception:
            _no_cost_models.add(self.model_name)
            return None


async def _within(awaitable: Any, seconds: float) -> Any:
    """A safety net over the client's own timeout (asyncio.timeout where it
    exists: no extra task per call)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _logprobs(raw: Any) -> list[TokenLogprob] | None:
    """OpenAI-format ``choice.logprobs`` -> our TokenLogprob list (None if absent)."""
    content = _get(raw, "content") if raw is not None else None
    if not content:
        return None
    out = []
    for entry in content:
        top = [(_get(t, "token"), float(_get(t, "logprob"))) for t in (_get(entry, "top_logprobs") or [])]
        out.append(TokenLogprob(_get(entry, "token"), float(_get(entry, "logprob")), top))
    return out
