"""The litellm backend: any ``provider/model`` litellm can reach, called
concurrently with retries, failover over several servers, token and cost
accounting, and optionally through the provider's batch API.

``LiteLLMBackend("openai/gpt-4o-mini", LiteLLMBackend.Options())`` reads
``OPENAI_API_KEY`` from the environment (litellm does that per provider).
For an OpenAI-compatible server (vLLM, FastChat, Ollama's /v1, ...) use
``openai/<served name>`` with ``api_base`` (or ``api_bases`` for several).
See docs/backends-api.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import random
import time
from typing import Any, Literal, Sequence, Union

from tapir import budget as _budget
from tapir.budget import OverBudget
from tapir.errors import TapirError, permanent_failure
from tapir.options import Options as _Options
from tapir.options import option
from tapir.roles import Completion, GenerationRequest, OnResult, deliver

from tapir_litellm import adaptive, direct, endpoints, ratelimit
from tapir_litellm.adaptive import QUEUE_CAP, ServerGate
from tapir_litellm.batch import BATCH_PRICE_FACTOR
from tapir_litellm.library import import_litellm
from tapir_litellm.loop import get_loop
from tapir_litellm.pool import SERVER_FAILURES, ServerPool
from tapir_litellm.pricing import Pricing
from tapir_litellm.replies import completion_of
from tapir_litellm.retry import PERMANENT, TRANSIENT, RetryPolicy, classify, failure_of, retry_after_of
from tapir_litellm.stop import STOPPED, StopSignal, drain_after_failure

# At most this many answers in hand are written in one commit (a crash loses at most these).
BURST_MAX = 64

_pools: dict[tuple, ServerPool] = {}


class ServerOption(_Options):
    """One server of a model served by several (an entry of ``api_bases``)."""

    url: str = option(..., "base URL of this server (http://host:8000/v1)")
    concurrency: int | None = option(None, "requests in flight to this server (default: the model's concurrency)",
                                     ge=1)


def check_credentials(model_name: str, options: Any = None) -> str | None:
    """What keeps a call to ``model_name`` from being sent (a missing key,
    naming its variable), or None. Sends nothing."""
    opts = endpoints.options_of(options)
    missing = endpoints.missing_variables(model_name, _first_base(opts), opts.get("api_key_env"))
    if not missing:
        return None
    names = " or ".join(missing)
    how = "named by api_key_env" if opts.get("api_key_env") else f"the key for provider '{endpoints.provider_of(model_name)}'"
    return (f"model '{model_name}': no credentials: environment variable {names} ({how}) is not set. "
            f"Export it before running (export {missing[0]}=...), or name another variable with "
            f"options.api_key_env. No request was sent.")


def _first_base(opts: dict[str, Any]) -> str | None:
    if opts.get("api_base"):
        return opts["api_base"]
    bases = opts.get("api_bases") or []
    if bases:
        first = bases[0]
        return first if isinstance(first, str) else dict(first).get("url")
    return None


class LiteLLMBackend:
    """A :class:`tapir.roles.Backend` over ``litellm.acompletion`` (or, for
    self-hosted OpenAI-compatible servers, a lean aiohttp client)."""

    class Options(_Options):
        api_base: str | None = option(
            None, "base URL of the server (http://host:8000/v1 for OpenAI-compatible ones); default: the "
                  "provider's, or its environment variable (OPENAI_BASE_URL / OPENAI_API_BASE for openai/)")
        api_bases: list[Union[str, ServerOption]] | None = option(
            None, "several servers of the same model: URLs or {url, concurrency}; load spreads by per-server "
                  "concurrency, with failover when one dies (instead of api_base)")
        api_key_env: str | None = option(
            None, "name of the environment variable holding the key (default: the provider's, e.g. "
                  "OPENAI_API_KEY); the key itself is never stored or logged")
        concurrency: int = option(8, "requests in flight to this model (per server with api_bases), shared by "
                                     "every backend of the same model id in the process", ge=1)
        timeout: float = option(
            300.0, "seconds per attempt (from sending to the whole answer; a long generation on a busy server "
                   "fits, a hung one is given up after it); the clock restarts whenever the server answers a "
                   "request sent before it (a queued request waits its turn), up to 10 times this in all", gt=0)
        adaptive_concurrency: bool = option(
            True, "lower the concurrency for a server whose answers slow down as requests queue (latency over "
                  "1.5 times the fastest recent answer and over a quarter of the timeout), back up to concurrency as "
                  "they speed up; false: always concurrency")
        input_usd_per_million: float | None = option(
            None, "price of a million prompt tokens, for cost accounting and the budget (default: litellm's price "
                  "map; a self-hosted server costs nothing)", ge=0)
        output_usd_per_million: float | None = option(
            None, "price of a million completion tokens (default: litellm's price map)", ge=0)
        rpm: float | None = option(None, "requests per minute to this model, at most (shared by every thread, "
                                         "backend and server of the model in the process)", gt=0)
        tpm: float | None = option(None, "tokens (prompt + completion) per minute to this model, at most; a "
                                         "request counts prompt/4 chars + max_tokens until its usage is known", gt=0)
        max_retries: int = option(5, "further attempts after the first", ge=0)
        retry_max_seconds: float = option(120.0, "the most seconds one request may spend waiting between attempts",
                                          ge=0)
        retry_base_seconds: float = option(1.0, "first backoff wait in seconds (doubles each attempt, with jitter)",
                                           ge=0)
        retry_cap_seconds: float = option(30.0, "longest backoff wait in seconds", ge=0)
        extra: dict[str, Any] = option(lambda: {}, "passed through to litellm.acompletion (e.g. {reasoning_effort: low}); "
                                             "enters the model id as a hash", factory=True)
        transport: Literal["auto", "litellm"] = option(
            "auto", "auto: openai/<name> on a self-hosted server goes through a lean aiohttp client, the rest "
                    "through litellm; litellm: always litellm")
        batch: bool = option(False, "send requests through the provider's batch API (openai/, azure/, vertex_ai/, "
                                    "bedrock/, mistral/, gemini/, xai/, litellm_proxy/, anthropic/; vllm/<model> runs "
                                    "vllm run-batch here); batch ids are kept in the database, a re-run collects")
        batch_poll_seconds: float = option(30.0, "seconds between polls of a running batch", gt=0)
        batch_max_wait_seconds: float = option(
            86400.0, "how long generate waits for batches; then their requests fail as BatchPending (re-run to "
                     "collect, nothing is resubmitted)", ge=0)
        batch_max_requests: int = option(50000, "requests per batch (OpenAI's limit is 50,000)", ge=1)
        batch_command: list[str] = option(
            lambda: ["vllm", "run-batch"], "for vllm/<model> with batch: true: the command run as COMMAND -i IN "
                                          "-o OUT --model MODEL", factory=True)

    def __init__(self, model_name: str, options: "LiteLLMBackend.Options | None" = None):
        options = options if options is not None else self.Options()
        if isinstance(options, dict):
            options = self.Options.model_validate(options)
        if options.api_base and options.api_bases:
            raise TapirError(f"litellm backend for '{model_name}': give api_base or api_bases, not both")
        self.options = options
        self.model_name = model_name
        self.api_key_env = options.api_key_env
        self.concurrency = int(options.concurrency)
        self.timeout = float(options.timeout)
        self.policy = RetryPolicy(int(options.max_retries), float(options.retry_max_seconds),
                                  float(options.retry_base_seconds), float(options.retry_cap_seconds))
        self.extra = dict(options.extra or {})
        if options.api_bases:
            servers = []
            for entry in options.api_bases:
                url, cap = (entry, None) if isinstance(entry, str) else (entry.url, entry.concurrency)
                servers.append((url.rstrip("/"), int(cap or self.concurrency)))
            if len({u for u, _ in servers}) != len(servers):
                raise TapirError(f"litellm backend for '{model_name}': api_bases lists a server twice")
            self.servers = servers
            self.api_base, self.api_base_source = servers[0][0], "option"
        else:
            self.api_base, self.api_base_source = endpoints.effective_base(model_name, options.api_base)
            self.servers = [(self.api_base, self.concurrency)] if self.api_base else []
        model_id = f"litellm:{model_name}"
        if self.servers:
            model_id += "@" + "|".join(sorted(endpoints.clean(u) for u, _ in self.servers))
        if self.extra:
            digest = hashlib.sha256(json.dumps(self.extra, sort_keys=True, default=str).encode()).hexdigest()
            model_id += f"#{digest[:12]}"
        self.model_id = model_id
        direct_ok = self.servers and all(direct.usable(model_name, u, self.extra) for u, _ in self.servers)
        self.transport = "openai" if options.transport == "auto" and direct_ok else "litellm"
        self._pool_key = (model_id, tuple(self.servers)) if len(self.servers) > 1 else None
        self._rng = random.Random()
        self._store = None
        self.pricing = Pricing(model_name, options, self.transport, self.price_factor)
        from tapir_litellm import batch as _batch

        problems = _batch.problems(model_name, options.model_dump())
        if problems:
            raise TapirError(problems[0])

    def attach_store(self, store: Any) -> None:
        """The database where batch jobs are kept (needed with ``batch: true``)."""
        self._store = store

    @property
    def price_factor(self) -> float:
        """What a call costs relative to litellm's synchronous price (0.5 through a batch API)."""
        return BATCH_PRICE_FACTOR if self.options.batch else 1.0

    def __repr__(self) -> str:  # never shows a key
        return f"LiteLLMBackend({self.model_id!r}, concurrency={self.concurrency})"

    # -- checks without a call ----------------------------------------------
    @classmethod
    def missing_credentials(cls, model_name: str, options: Any = None) -> list[str]:
        """Environment variables a call needs and does not find (sends nothing)."""
        opts = endpoints.options_of(options)
        return endpoints.missing_variables(model_name, _first_base(opts), opts.get("api_key_env"))

    @classmethod
    def preflight(cls, model_name: str, options: Any = None) -> list[str]:
        """Every problem found without sending anything (credentials, option
        conflicts), one line each."""
        opts = endpoints.options_of(options)
        problems = []
        if opts.get("api_base") and opts.get("api_bases"):
            problems.append(f"model '{model_name}': give options.api_base or options.api_bases, not both")
        problem = check_credentials(model_name, opts)
        if problem:
            problems.append(problem)
        from tapir_litellm import batch as _batch

        return problems + _batch.problems(model_name, opts)

    def server_stats(self) -> dict[str, dict]:
        """Per server (with api_bases): answers, failures, in flight, down now."""
        pool = _pools.get(self._pool_key) if self._pool_key else None
        return pool.stats() if pool else {}

    # -- the Backend protocol ----------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        """Answer every request concurrently (at most ``concurrency`` in
        flight); ``on_result(i, completion)`` runs in this thread as each
        finishes. Failures come back as ``Completion(error=...)``; missing
        credentials raise :class:`TapirError` before anything is sent."""
        results: list[Completion | None] = [None] * len(requests)
        if not requests:
            return []
        problem = check_credentials(self.model_name, self.options)
        if problem:
            raise TapirError(problem)
        if self.options.batch:
            from tapir_litellm.batch import BatchRunner, require_store

            return BatchRunner(self, require_store(self)).run(requests, on_result)
        if self.transport == "litellm":
            import_litellm()
        done: queue.SimpleQueue = queue.SimpleQueue()
        stop = StopSignal()  # the first permanent failure, or the caller's stop: nothing more is sent
        future = asyncio.run_coroutine_threadsafe(self._run_all(list(requests), done, stop), get_loop())
        try:
            received = 0
            permanent: Completion | None = None
            while received < len(requests):
                try:
                    burst = [done.get(timeout=1.0)]  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    if future.done():
                        future.result()  # re-raises a crash of the loop side
                        break
                    continue
                while len(burst) < BURST_MAX:  # the answers already in hand: one write for them all
                    try:
                        burst.append(done.get_nowait())
                    except queue.Empty:
                        break
                received += len(burst)
                kept = []
                for i, completion in burst:
                    if completion.failure_kind == PERMANENT:
                        permanent = permanent or completion
                        if not completion.attempts:
                            continue  # never sent (over budget, or an earlier call failed permanently): no record
                    results[i] = completion
                    kept.append((i, completion))
                deliver(on_result, kept)
            future.result()
        except Exception:
            # on_result raised (the stage: its circuit breaker, a bug). Nothing more is
            # sent; the requests in flight are paid for: wait for them and have them recorded.
            drain_after_failure(future, done, stop, on_result, self.timeout, self.model_name)
            raise
        except BaseException:  # Ctrl-C: stop now (a re-run asks again what was in flight)
            future.cancel()
            raise
        if permanent is not None:
            # Answers in flight were delivered above; the rest were never sent.
            raise permanent_failure(self.model_name, permanent.failure_cause, permanent.http_status,
                                    permanent.error or "")
        return [r if r is not None else Completion(error="no result") for r in results]

    # -- on the event loop --------------------------------------------------
    def _pool(self) -> ServerPool | None:
        if self._pool_key is None:
            return None
        pool = _pools.get(self._pool_key)
        if pool is None:
            pool = _pools[self._pool_key] = ServerPool(self.servers, limit_of=lambda url: self._gate(url).allowed)
        return pool

    async def _run_all(self, requests: list[GenerationRequest], done: queue.SimpleQueue,
                       stop: StopSignal) -> None:
        pool = self._pool()
        sem = None if pool else self._gate(self.api_base)

        async def one(i: int, request: GenerationRequest) -> None:
            try:
                completion = await self._call_with_retries(request, sem, pool, stop)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let one request break the batch
                completion = Completion(error=self._clean(f"{type(exc).__name__}: {exc}"), failure_kind="content",
                                        failure_cause="error")
            if completion.failure_kind == PERMANENT:
                stop.set(completion)
            done.put((i, completion))

        # A fixed set of workers takes the requests in order, not one task per
        # request: 52K parked tasks cost ~150 MB and the loop's time. Twice the
        # servers' slots keeps every slot busy while some workers wait out a
        # retry's backoff; the gates still decide what is sent when.
        queued = iter(enumerate(requests))

        async def worker() -> None:
            for i, request in queued:  # one event loop: taking the next one is atomic
                await one(i, request)

        workers = min(len(requests), 2 * sum(cap for _, cap in self.servers) if self.servers else 2 * self.concurrency)
        await asyncio.gather(*(worker() for _ in range(max(1, workers))))

    def _not_sent(self, stop: StopSignal, attempts: list[dict]) -> Completion:
        """A request left unsent because an earlier one failed permanently (the same cause would fail it),
        or because the caller stopped (its earlier attempts, if any, are still recorded)."""
        first = stop.first
        if first.failure_cause == STOPPED:
            return Completion(error="not sent again: the stage stopped while this request waited to retry",
                              failure_kind=TRANSIENT, failure_cause=STOPPED, attempts=attempts)
        return Completion(error=f"not sent: an earlier request failed permanently ({first.error})",
                          failure_kind=PERMANENT, failure_cause=first.failure_cause, http_status=first.http_status,
                          attempts=attempts)

    def _gate(self, url: str | None) -> ServerGate:
        """The process-wide gate of a server of this model (see adaptive.py)."""
        return adaptive.gate(self.model_id, url, self.concurrency if url == self.api_base or not self.servers
                             else dict(self.servers)[url], self.timeout, bool(self.options.adaptive_concurrency))

    def concurrency_stats(self) -> dict[str, dict]:
        """Per server: the concurrency limit now, the configured one, the peak in
        flight, how often and how low it was lowered (adaptive_concurrency)."""
        return {url: g.stats() for url, g in adaptive.gates_of(self.model_id).items()}

    async def _call_with_retries(self, request: GenerationRequest, sem: ServerGate | None,
                                 pool: ServerPool | None, stop: StopSignal) -> Completion:
        """One request, retried while its failures are transient. Every attempt
        is listed in ``Completion.attempts``; ``latency_s`` is the last
        attempt's own time (the timeout is per attempt)."""
        call = direct.acompletion if self.transport == "openai" else None
        if call is None:
            litellm = import_litellm()

            async def call(kw: dict[str, Any]) -> Any:
                if "?" in (kw.get("api_base") or "") and self.model_name.startswith("openai/"):
                    kw = _with_query_client(kw)  # litellm would put the URL's query into the body
                return await litellm.acompletion(**kw)

        kwargs = self._kwargs(request)
        limiter = ratelimit.limiter(self.model_name, self.options.rpm, self.options.tpm)
        tokens = ratelimit.estimate_tokens(request.messages, kwargs.get("max_tokens")) if limiter else 0
        spending = _budget.active()
        role = request.meta.get("role")
        estimate = self.pricing.estimate(request.messages, kwargs.get("max_tokens")) if spending is not None else 0.0
        waited = 0.0
        attempt = 0
        history: list[str] = []
        attempts: list[dict] = []
        while True:
            server = None
            began: float | None = None
            reserved = 0.0
            try:
                if stop:
                    return self._not_sent(stop, attempts)
                if limiter is not None:
                    await limiter.acquire(tokens)
                if spending is not None:
                    try:
                        spending.reserve(role, estimate)
                    except OverBudget as exc:
                        refused = Completion(error=f"OverBudget: {exc}; not sent", failure_kind=PERMANENT,
                                             failure_cause="budget", attempts=attempts)
                        stop.set(refused)
                        return refused
                    reserved = estimate
                if pool is not None:
                    server = await pool.acquire()
                    kwargs["api_base"] = server.url
                    gate = self._gate(server.url)  # the attempt clock and the adaptive cap (the pool reads it)
                    ticket = gate.enter()
                    try:
                        if stop:
                            gate.leave(ticket, "gone")
                            await pool.release(server, "cancelled")
                            return self._not_sent(stop, attempts)
                        began = time.perf_counter()
                        response = await gate.within(call(kwargs), ticket)
                    except BaseException as exc:
                        kind = classify(exc)[0] if isinstance(exc, Exception) else "cancelled"
                        gate.leave(ticket, _gate_outcome(exc))
                        await pool.release(server, kind)
                        raise
                    gate.leave(ticket, "answered", time.perf_counter() - began)
                    await pool.release(server, None)
                else:
                    ticket = await sem.acquire()
                    outcome, seconds = "gone", None
                    try:
                        if stop:
                            return self._not_sent(stop, attempts)
                        began = time.perf_counter()
                        response = await sem.within(call(kwargs), ticket)
                        outcome, seconds = "answered", time.perf_counter() - began
                    except BaseException as exc:
                        outcome = _gate_outcome(exc)
                        raise
                    finally:
                        sem.release(ticket, outcome, seconds)
                completion = self._to_completion(response)
                if reserved:  # the reservation becomes what the answer cost
                    spending.settle(role, reserved, completion.cost or 0.0)
                    reserved = 0.0
                completion.latency_s = time.perf_counter() - began
                attempts.append(_attempt(attempt, "ok", None, completion.latency_s, "yes"))
                completion.attempts = attempts
                if limiter is not None:
                    used = None
                    if completion.prompt_tokens is not None and completion.completion_tokens is not None:
                        used = completion.prompt_tokens + completion.completion_tokens
                    limiter.settle(tokens, used)
                return completion
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                seconds = time.perf_counter() - began if began is not None else 0.0
                kind, status = classify(exc)
                failure = failure_of(exc)
                # A timed-out or broken attempt may still have been generated (and billed) by the server.
                billed = "maybe" if began is not None and kind in ("Timeout", "ConnectionError", "MalformedResponse") \
                    else "no"
                attempts.append(_attempt(attempt, failure.cause, status, seconds, billed))
                if reserved:  # a timed-out attempt may have been generated: count it as paid
                    spending.settle(role, reserved, reserved if billed == "maybe" else 0.0)
                error = self._describe(exc, attempt, history, server.url if server else self.api_base)
                history.append(kind + (f" {status}" if status else ""))

                def failed(text: str) -> Completion:
                    return Completion(error=text, latency_s=seconds, http_status=status, failure_kind=failure.kind,
                                      failure_cause=failure.cause, attempts=attempts)

                if not failure.retryable or attempt >= self.policy.max_retries:
                    return failed(error)
                if pool is not None and server is not None and kind in SERVER_FAILURES and pool.other_server_up(server):
                    delay = 0.0  # fail over at once
                else:
                    delay = self.policy.wait(attempt, retry_after_of(exc), self._rng)
                if waited + delay > self.policy.max_seconds:
                    return failed(f"{error} (retry time budget of {self.policy.max_seconds:g}s spent)")
                waited += delay
                attempt += 1
                if delay:
                    await stop.sleep(delay)  # a stop ends the wait: the loop's top then sends nothing

    # -- helpers ------------------------------------------------------------
    def _kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": request.messages,
            "max_tokens": p.max_new_tokens,
            "temperature": float(p.temperature),
            # The transport's own limit: queued attempts are timed by the server gate (adaptive.py).
            "timeout": self.timeout * QUEUE_CAP,
            "num_retries": 0,  # ours are the only retries
            "max_retries": 0,  # ... including the openai SDK's
            "drop_params": True,  # a provider without e.g. logprobs answers without them
            "no-log": True,  # no litellm logging callbacks (we record calls ourselves; cheaper)
        }
        if p.temperature > 0 and p.top_p != 1.0:
            kwargs["top_p"] = float(p.top_p)
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.temperature > 0 or request.sample:
            # Distinct, reproducible samples (see GenerationParams.sample_seed); at temperature 0 a
            # fresh draw (sample > 0) sends one too, so a server whose greedy path honours it may differ.
            kwargs["seed"] = p.sample_seed(request.sample)
        if p.top_logprobs > 0:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = int(p.top_logprobs)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = endpoints.api_key(self.model_name, self.api_base, self.api_key_env)
        if key:
            kwargs["api_key"] = key
        kwargs.update(self.extra)
        return kwargs

    def _clean(self, text: str) -> str:
        """An error text with every key (the environment's, and any in URLs or headers) cut out."""
        return endpoints.clean(text, self.api_key_env)

    def _describe(self, exc: BaseException, attempt: int, history: list[str], base: str | None) -> str:
        """One actionable line per failure kind (what happened, where, what to do)."""
        kind, status = classify(exc)
        cause = failure_of(exc).cause
        text = str(exc)
        where = f" from {base}" if base else ""
        key_var = self.api_key_env or endpoints.key_env_var(endpoints.provider_of(self.model_name))
        if cause == "quota":
            kind = "QuotaExceeded"
            text = (f"the provider says the account behind {key_var} is out of quota or credit: add credit or raise "
                    f"the quota, then re-run; no retry will fix it ({text})")
        elif cause == "context_length":
            kind = "ContextLengthExceeded"
            text = (f"the request is longer than '{self.model_name}' accepts: shorten the prompt or lower "
                    f"max_new_tokens ({text})")
        elif kind == "Timeout":
            text = f"no answer within {self.timeout:g}s{where} (raise options.timeout for slow models)"
        elif kind == "ConnectionRefused":
            text = (f"nothing answers at {base or 'the provider'}: is the server running, on this host and port? "
                    f"({text})")
        elif kind == "ConnectionError":
            text = f"the connection to {base or 'the provider'} failed or broke mid-answer ({text})"
        elif kind == "AuthenticationError":
            text = (f"the server refused the credentials: check {key_var} (or options.api_key_env names the "
                    f"right variable) ({text})")
        elif kind == "PermissionDenied":
            text = f"the key in {key_var} is not allowed to use '{self.model_name}' ({text})"
        elif kind == "NotFound":
            text = f"no such model or route{where} ({text}).{endpoints.hint_404(base)}"
        elif kind == "BadRequest":
            text = f"the server rejected the request as invalid; no retry will fix it ({text})"
        prefix = kind + (f" (HTTP {status})" if status else "")
        earlier = ""
        if history:
            counts: dict[str, int] = {}
            for h in history:
                counts[h] = counts.get(h, 0) + 1
            earlier = " [earlier: " + ", ".join(f"{k} x{n}" for k, n in counts.items()) + "]"
        return self._clean(f"{prefix} after {attempt + 1} attempt(s){earlier}: {text}")

    def _to_completion(self, response: Any) -> Completion:
        """The reply (a dict or litellm's object) as a Completion, with its cost."""
        return completion_of(response, self.pricing.cost(response))


_query_clients: dict[tuple, Any] = {}


def _with_query_client(kw: dict[str, Any]) -> dict[str, Any]:
    """For an api_base with query parameters (``?api-key=...``): an openai
    client that sends them on every request, handed to litellm as ``client``."""
    import openai
    from urllib.parse import parse_qsl

    kw = dict(kw)
    base, _, query = kw.pop("api_base").partition("?")
    key = kw.get("api_key") or endpoints.PLACEHOLDER_KEY
    ident = (id(asyncio.get_running_loop()), base, query, hashlib.sha256(key.encode()).hexdigest())
    client = _query_clients.get(ident)
    if client is None:
        client = _query_clients[ident] = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0,
                                                            default_query=dict(parse_qsl(query)))
    kw["client"] = client
    return kw


def _gate_outcome(exc: BaseException) -> str:
    """How a failed attempt ended, for the server gate: timed out, refused by
    the server (an HTTP error answer: its queue moved), or gone (no answer)."""
    if not isinstance(exc, Exception):
        return "gone"  # cancelled
    kind, status = classify(exc)
    if kind == "Timeout":
        return "timeout"
    return "refused" if status is not None else "gone"


def _attempt(n: int, outcome: str, status: int | None, seconds: float, billed: str) -> dict[str, Any]:
    """One attempt of a call, as kept in ``llm_calls.attempt_log``."""
    return {"n": n + 1, "outcome": outcome, "http_status": status, "seconds": round(seconds, 3), "billed": billed}
