"""Provider batch APIs: every provider whose batch API tapir can drive,
behind one small protocol (:mod:`tapir_litellm.batch_protocol`).

Which model goes through which transport (:func:`transport_name`):

* ``openai/<name>``: OpenAI's files + batches endpoints through the openai
  client (:mod:`batch_openai`), on OpenAI or on a server that offers them
  (one ``api_base``).
* ``azure/``, ``vertex_ai/``, ``bedrock/``, ``mistral/``, ``gemini/``,
  ``xai/``, ``litellm_proxy/``: litellm's ``create_file`` / ``create_batch``
  / ``retrieve_batch`` / ``file_content`` (/ ``list_batches``)
  (:mod:`batch_litellm`), as far as litellm implements them.
* ``anthropic/``: Anthropic's Message Batches API (:mod:`batch_anthropic`).
* ``vllm/<model>``: ``vllm run-batch`` on this machine (:mod:`batch_vllm`).

Anything else (``hosted_vllm/``: vLLM's OpenAI server has no /v1/files or
/v1/batches) is refused by :func:`problems` before anything is sent.

``generate`` with ``batch: true``:

1. Each request's cache key (:func:`tapir.cache.cache_key`) is looked up in
   ``api_batch_requests``: a request already in a live batch (submitted,
   running or completed but not yet collected) is collected from that batch,
   never sent again.
2. The others are written as OpenAI batch JSONL (``custom_id`` = cache key),
   in chunks of ``batch_max_requests``: a row in ``api_batches`` (status
   ``submitting``) and its request keys are committed first, then the
   transport submits (upload, create with our id where the provider keeps
   metadata), then the provider's batch id is stored. A process killed
   between the create and the store is found out on the next run: the
   transport looks for our batch (:meth:`BatchTransport.find`) before
   anything is resubmitted.
3. Live batches are polled every ``batch_poll_seconds`` until done or
   ``batch_max_wait_seconds`` have passed; a completed batch's output (and
   error) lines are handed to ``on_result`` (the cache records them); then
   the batch is marked ``collected``. Requests of a batch still running at
   the deadline come back as ``BatchPending`` errors (not cached): re-run to
   collect. A failed, expired or cancelled batch makes its requests errors,
   and the next run submits them anew.

kill -9 at any point loses nothing and pays nothing twice
(tests/test_litellm_batch.py, tests/test_batch_transports.py).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.roles import Completion, GenerationRequest, OnResult
from tapir.store import batches

from tapir_litellm import direct, endpoints
from tapir_litellm.batch_protocol import DEAD, LIVE, BatchingBackend, BatchTransport
from tapir_litellm.library import import_litellm

# OpenAI-style batch endpoints bill half the synchronous price.
BATCH_PRICE_FACTOR = 0.5

# Providers whose whole batch cycle (upload, create, retrieve, read the
# output) litellm 1.110.2 implements; ``list_batches`` (to adopt a batch
# whose id was never stored) only for LITELLM_LISTABLE.
LITELLM_BATCH_PROVIDERS = ("azure", "vertex_ai", "bedrock", "mistral", "gemini", "xai", "litellm_proxy")
LITELLM_LISTABLE = ("azure", "vertex_ai", "xai", "litellm_proxy")
SUPPORTED = ("openai/ (OpenAI, or a server with /v1/files and /v1/batches, one api_base)",
             *(f"{p}/ (litellm's batch API)" for p in LITELLM_BATCH_PROVIDERS),
             "anthropic/ (Message Batches)", "vllm/<model> (vllm run-batch on this machine)")


# Polls of one batch that may fail in a row (network, the provider's 5xx) before
# generate stops waiting for it (its requests: BatchPending; a re-run collects).
MAX_POLL_FAILURES = 5


def transport_name(model_name: str) -> str | None:
    """Which batch transport serves ``model_name`` (None: no batch API)."""
    provider = endpoints.provider_of(model_name)
    if provider == "openai" and model_name.startswith("openai/"):
        return "openai"
    if provider in LITELLM_BATCH_PROVIDERS:
        return "litellm"
    if provider == "anthropic":
        return "anthropic"
    if provider == "vllm":
        return "vllm"
    return None


def problems(model_name: str, opts: dict[str, Any]) -> list[str]:
    """Why ``batch: true`` cannot work for this model (found without a call)."""
    if not opts.get("batch"):
        return []
    transport = transport_name(model_name)
    if transport is None:
        provider = endpoints.provider_of(model_name)
        why = (" (vLLM's OpenAI server has no /v1/files or /v1/batches: for an offline batch on this machine "
               "use vllm/<model>, which runs vllm run-batch)" if provider == "hosted_vllm" else "")
        return [f"model '{model_name}': batch: true is not supported for provider '{provider}'{why}. "
                f"Batch APIs tapir can use: {'; '.join(SUPPORTED)}. Set batch: false for this model, or use one "
                "of these"]
    if opts.get("api_bases"):
        return [f"model '{model_name}': batch: true takes one server (api_base), not api_bases"]
    if transport == "vllm":
        command = list(opts.get("batch_command") or [])
        if not command or shutil.which(command[0]) is None:
            return [f"model '{model_name}': batch: true runs '{' '.join(command) or '(nothing)'}' for vllm/ models, "
                    f"and '{command[0] if command else ''}' is not on PATH: install vllm (pip install vllm) or set "
                    "options.batch_command to the command that runs an OpenAI batch file"]
    return []


def transport_for(backend: BatchingBackend, store: Any) -> BatchTransport:
    name = transport_name(backend.model_name)
    if name == "openai":
        from tapir_litellm.batch_openai import OpenAIBatches

        return OpenAIBatches(backend)
    if name == "litellm":
        from tapir_litellm.batch_litellm import LiteLLMBatches

        return LiteLLMBatches(backend, LITELLM_LISTABLE)
    if name == "anthropic":
        from tapir_litellm.batch_anthropic import AnthropicBatches

        def claimed() -> set[str]:
            return batches.provider_batch_ids(store)

        return AnthropicBatches(backend, claimed)
    if name == "vllm":
        from tapir_litellm.batch_vllm import VLLMRunBatch

        return VLLMRunBatch(backend, store)
    raise TapirError(problems(backend.model_name, {"batch": True})[0])


def _now() -> str:
    from tapir.store.db import utcnow

    return utcnow()


class BatchRunner:
    def __init__(self, backend: BatchingBackend, store: Any, transport: BatchTransport | None = None):
        self.be = backend
        self.store = store
        self.transport = transport if transport is not None else transport_for(backend, store)

    # -- the database -------------------------------------------------------
    def _update(self, batch_id: str, **fields: Any) -> None:
        batches.update_batch(self.store, batch_id, {**fields, "updated_at": _now()})

    def _live_batches_of(self, keys: Sequence[str]) -> dict[str, str]:
        """cache key -> our batch id, for keys in a live batch of this model."""
        return batches.live_batches_of(self.store, self.be.model_id, LIVE, keys)

    def _batch(self, batch_id: str) -> dict[str, Any]:
        return batches.batch_row(self.store, batch_id)

    # -- submit -------------------------------------------------------------
    def _line(self, key: str, request: GenerationRequest) -> str:
        kwargs = self.be._kwargs(request)
        body, _, _ = direct.body_of(kwargs)
        return json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})

    def _submit(self, keys: list[str], by_key: dict[str, GenerationRequest], deliver) -> str | None:
        """Record, then send one batch; None when sending failed (its requests got the reason)."""
        batch_id = f"tapir-{uuid.uuid4().hex[:16]}"
        now = _now()
        batches.add_batch(self.store, batch_id, self.be.model_id, keys, now)  # recorded before anything is sent
        try:
            self._upload_and_create(batch_id, keys, by_key)
        except Exception as exc:  # noqa: BLE001 - the provider refused or was unreachable: these requests' failure
            self._send_failed(batch_id, keys, exc, deliver)
            return None
        return batch_id

    def _send_failed(self, batch_id: str, keys: Sequence[str], exc: Exception, deliver) -> None:
        """A submit that raised: before the upload was recorded nothing can exist at the provider (the
        batch fails, a re-run submits anew); after it, the create may have reached the provider (the
        batch stays ``submitting``: a re-run looks for it before sending again)."""
        row = self._batch(batch_id)
        text = endpoints.clean(f"BatchSubmitFailed: {type(exc).__name__}: {exc}", self.be.api_key_env)
        if row["input_file_id"]:
            text += "; re-run: tapir looks for this batch at the provider before submitting again"
            self._update(batch_id, error=text)
        else:
            text += "; re-run to submit again"
            self._update(batch_id, status="failed", error=text)
        for key in keys:
            deliver(key, Completion(error=text))

    def _upload_and_create(self, batch_id: str, keys: list[str], by_key: dict[str, GenerationRequest]) -> None:
        data = "".join(self._line(k, by_key[k]) + "\n" for k in keys).encode()
        created = self.transport.submit(batch_id, data, len(keys), lambda **f: self._update(batch_id, **f))
        self._update(batch_id, provider_batch_id=created.id, status=created.status)

    def _adopt_or_resubmit(self, batch_id: str, by_key: dict[str, GenerationRequest]) -> None:
        """A batch left in ``submitting`` (the process died mid-submit)."""
        row = self._batch(batch_id)
        remote = self.transport.find(batch_id, row) if row["input_file_id"] else None  # no upload: no create
        if remote is not None:
            self._update(batch_id, provider_batch_id=remote.id, input_file_id=remote.input_file_id or row["input_file_id"],
                         status=remote.status)
            return
        keys = batches.batch_request_keys(self.store, batch_id)
        if any(k not in by_key for k in keys):  # we cannot rebuild its lines: let these go again
            self._update(batch_id, status="failed", error="submit was interrupted; requests resubmitted")
            return
        self._upload_and_create(batch_id, keys, by_key)

    # -- collect ------------------------------------------------------------
    def _collect(self, batch_id: str, want: set[str], deliver) -> bool:
        """Poll once; deliver every wanted line of a finished batch. True when done."""
        row = self._batch(batch_id)
        remote = self.transport.retrieve(row)
        if remote.status != row["status"]:
            self._update(batch_id, status=remote.status)
        if remote.status in DEAD:
            text = f"BatchFailed: batch {remote.id} ended {remote.status}" + \
                   (f" ({remote.errors})" if remote.errors else "") + "; re-run to submit these requests again"
            self._update(batch_id, error=endpoints.clean(text))
            for key in want:
                deliver(key, Completion(error=endpoints.clean(text)))
            return True
        if remote.status != "completed":
            return False
        self._update(batch_id, output_file_id=remote.output_file_id, error_file_id=remote.error_file_id)
        seen: set[str] = set()
        for entry in self.transport.results(remote):
            key = entry.get("custom_id")
            if key not in want or key in seen:
                continue
            seen.add(key)
            deliver(key, self._completion(entry))
        for key in want - seen:
            deliver(key, Completion(error=f"BatchFailed: batch {remote.id} has no line for this request; "
                                          "re-run to submit it again"))
        self._update(batch_id, status="collected")
        return True

    def _completion(self, entry: dict[str, Any]) -> Completion:
        response = entry.get("response") or {}
        status = response.get("status_code")
        if entry.get("error") or not status or status >= 400:
            error = entry.get("error") or (response.get("body") or {}).get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            return Completion(error=endpoints.clean(f"BatchLineFailed (HTTP {status or '?'}): {message}"),
                              http_status=status if isinstance(status, int) else None)
        try:
            completion = self.be._to_completion(response["body"])
        except Exception as exc:  # noqa: BLE001 - a malformed line is that request's failure
            return Completion(error=f"MalformedResponse in batch output: {exc}")
        completion.cost = batch_cost(self.be.model_name, completion.prompt_tokens, completion.completion_tokens)
        return completion

    # -- the whole thing ----------------------------------------------------
    def run(self, requests: Sequence[GenerationRequest], on_result: OnResult | None) -> list[Completion]:
        from tapir.cache import cache_key

        opts = self.be.options
        keys = [cache_key(self.be.model_id, r) for r in requests]
        positions: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        by_key = {k: requests[idx[0]] for k, idx in positions.items()}
        results: list[Completion | None] = [None] * len(requests)

        def deliver(key: str, completion: Completion) -> None:
            for i in positions.get(key, []):
                if results[i] is None:
                    results[i] = completion
                    if on_result is not None:
                        on_result(i, completion)

        live = self._live_batches_of(list(by_key))
        fresh = [k for k in by_key if k not in live]
        wanted: dict[str, set[str]] = {}
        for key, batch_id in live.items():
            wanted.setdefault(batch_id, set()).add(key)
        for start in range(0, len(fresh), opts.batch_max_requests):
            chunk = fresh[start:start + opts.batch_max_requests]
            batch_id = self._submit(chunk, by_key, deliver)
            if batch_id is not None:
                wanted[batch_id] = set(chunk)
        for batch_id in list(wanted):
            if self._batch(batch_id)["status"] == "submitting":
                try:
                    self._adopt_or_resubmit(batch_id, by_key)
                except Exception as exc:  # noqa: BLE001 - as in _submit
                    self._send_failed(batch_id, sorted(wanted.pop(batch_id)), exc, deliver)
                    continue
                if self._batch(batch_id)["status"] == "failed":  # could not adopt: submit these anew
                    keys_again = sorted(wanted.pop(batch_id))
                    new_id = self._submit(keys_again, by_key, deliver)
                    if new_id is not None:
                        wanted[new_id] = set(keys_again)
        deadline = time.monotonic() + opts.batch_max_wait_seconds
        pending = dict(wanted)
        poll_failures: dict[str, list[str]] = {}  # consecutive failed polls of a batch

        def leave_pending(batch_id: str, why: str = "") -> None:
            row = self._batch(batch_id)
            for key in pending.pop(batch_id):
                deliver(key, Completion(error=f"BatchPending: batch {row['provider_batch_id']} is {row['status']}"
                                              f"{why}; re-run to collect (nothing is resubmitted)"))

        while pending:
            for batch_id in list(pending):
                try:
                    done = self._collect(batch_id, pending[batch_id], deliver)
                except Exception as exc:  # noqa: BLE001 - a poll that failed: the batch is still the provider's
                    failures = poll_failures.setdefault(batch_id, [])
                    failures.append(endpoints.clean(f"{type(exc).__name__}: {exc}", self.be.api_key_env))
                    if len(failures) >= MAX_POLL_FAILURES:
                        leave_pending(batch_id, f"; its last {len(failures)} polls failed ({failures[-1]})")
                    continue
                poll_failures.pop(batch_id, None)
                if done:
                    pending.pop(batch_id)
            if not pending:
                break
            if time.monotonic() >= deadline:
                for batch_id in list(pending):
                    failures = poll_failures.get(batch_id)
                    leave_pending(batch_id, f"; last poll failed ({failures[-1]})" if failures else "")
                break
            time.sleep(min(opts.batch_poll_seconds, max(0.0, deadline - time.monotonic())))
        return [r if r is not None else Completion(error="no result") for r in results]


def batch_cost(model_name: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """USD for a batch call: litellm's batch prices where its map has them,
    else :data:`BATCH_PRICE_FACTOR` x the synchronous price; None if unpriced."""
    if prompt_tokens is None or completion_tokens is None:
        return None
    litellm = import_litellm()
    name = model_name.split("/", 1)[1] if "/" in model_name else model_name  # the map keys most models bare
    info = litellm.model_cost.get(name) or litellm.model_cost.get(model_name)
    if not info:
        return None
    pin = info.get("input_cost_per_token_batches")
    pout = info.get("output_cost_per_token_batches")
    if pin is not None and pout is not None:
        return float(pin) * prompt_tokens + float(pout) * completion_tokens
    pin, pout = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if pin is None or pout is None:
        return None
    return BATCH_PRICE_FACTOR * (float(pin) * prompt_tokens + float(pout) * completion_tokens)


def require_store(backend: BatchingBackend) -> Any:
    store = backend._store
    if store is None:
        raise TapirError(f"model '{backend.model_name}': batch: true keeps its batch ids in the database; the backend "
                         "needs it attached (backend.attach_store(store)) before generate")
    return store
