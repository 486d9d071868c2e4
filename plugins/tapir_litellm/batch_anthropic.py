"""The Anthropic batch transport: Anthropic's Message Batches API.

litellm 1.110.2 can retrieve an Anthropic batch but not create one, so this
speaks the API itself (httpx): ``POST /v1/messages/batches`` with
``requests: [{custom_id, params}]`` (``custom_id`` = the cache key, a
64-character hex digest, inside Anthropic's ``^[a-zA-Z0-9_-]{1,64}$``;
``params`` = a Messages request made from tapir's OpenAI chat body),
``GET /v1/messages/batches/{id}`` to poll, the ``results_url`` JSONL once
``processing_status`` is ``ended``, ``GET /v1/messages/batches`` to find a
batch whose id was never stored.

Everything is reported in OpenAI's vocabulary (:mod:`batch_protocol`):
``in_progress`` / ``cancelling`` / ``completed`` (= ended; each line says
whether its request succeeded, errored, was canceled or expired), and each
result line becomes an OpenAI batch output line.

Anthropic keeps no metadata on a batch, so a batch created by a process
killed before it stored the id is recognised by its size and creation time
(the newest batch with as many requests, created after our row and not
already claimed by another row); should that guess be wrong, its requests
come back as "no line for this request" and the next run submits them.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from tapir_litellm import endpoints
from tapir_litellm.batch_protocol import BatchingBackend, RemoteBatch, jsonl_lines


ANTHROPIC_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
STATUS = {"in_progress": "in_progress", "canceling": "cancelling", "ended": "completed"}
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "pause_turn": "stop", "refusal": "content_filter"}
# OpenAI chat fields a Messages request has no place for (litellm drops them too: drop_params)
DROPPED = ("model", "messages", "max_tokens", "stop", "seed", "logprobs", "top_logprobs", "n")
# Anthropic error types that are the request's own fault (the rest: the provider's)
CLIENT_ERRORS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                 "not_found_error": 404, "request_too_large": 413}
CLOCK_SLACK = timedelta(minutes=5)


def params_of(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request body -> Anthropic Messages ``params``."""
    system = [m["content"] for m in body["messages"] if m["role"] == "system"]
    params: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": body["max_tokens"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in body["messages"] if m["role"] != "system"],
    }
    if system:
        params["system"] = "\n\n".join(system)
    if body.get("stop"):
        params["stop_sequences"] = list(body["stop"])
    params.update({k: v for k, v in body.items() if k not in DROPPED})
    return params


def output_line(entry: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic result line -> an OpenAI batch output line."""
    key = entry.get("custom_id")
    result = entry.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result["message"]
        usage = message.get("usage") or {}
        prompt = sum(usage.get(k) or 0 for k in ("input_tokens", "cache_creation_input_tokens",
                                                  "cache_read_input_tokens"))
        text = "".join(block.get("text", "") for block in message.get("content") or [] if block.get("type") == "text")
        body = {"id": message.get("id"), "object": "chat.completion", "model": message.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": FINISH.get(message.get("stop_reason"), message.get("stop_reason"))}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": usage.get("output_tokens"),
                          "total_tokens": prompt + (usage.get("output_tokens") or 0)}}
        return {"custom_id": key, "response": {"status_code": 200, "body": body}, "error": None}
    if kind == "errored":
        error = result.get("error") or {}
        inner = error.get("error") if isinstance(error.get("error"), dict) else error
        status = CLIENT_ERRORS.get(inner.get("type"), 500)
        message = f"{inner.get('type', 'error')}: {inner.get('message', '')}"
        return {"custom_id": key, "response": {"status_code": status, "body": None},
                "error": {"code": inner.get("type"), "message": message}}
    why = {"canceled": "the batch was canceled before this request ran",
           "expired": "the batch expired (24 h) before this request ran"}.get(kind, f"result type {kind!r}")
    return {"custom_id": key, "response": {"status_code": 500, "body": None},
            "error": {"code": kind, "message": f"{why}; re-run to submit it again"}}


def _when(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


class AnthropicBatches:
    """Message Batches over httpx; ``api_base`` (or ANTHROPIC_API_BASE) for a stand-in."""

    name = "anthropic"

    def __init__(self, backend: BatchingBackend, claimed: Callable[[], set[str]]):
        self.be = backend
        self.claimed = claimed  # provider batch ids already kept in api_batches
        base = (backend.api_base or ANTHROPIC_BASE).rstrip("/")
        for tail in ("/v1/messages", "/v1"):
            base = base.removesuffix(tail)
        self.url = base + "/v1/messages/batches"

    # -- HTTP -----------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = endpoints.api_key(self.be.model_name, self.be.api_base, self.be.api_key_env) or \
            os.environ.get("ANTHROPIC_API_KEY") or ""
        return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None, *, create: bool = False):
        """One request; overload (429, 529) is waited out, and for reads also
        5xx and dropped connections. A create is not repeated after it may
        have reached Anthropic (a batch created twice is paid twice)."""
        import httpx

        timeout = max(self.be.timeout, 60.0)
        for attempt in range(4):
            last = attempt == 3
            try:
                response = httpx.request(method, url, json=body, headers=self._headers(), timeout=timeout)
            except httpx.TransportError:
                if create or last:
                    raise
                time.sleep(2 ** attempt)
                continue
            retry = response.status_code in (429, 529) or (not create and response.status_code >= 500)
            if retry and not last:
                time.sleep(float(response.headers.get("retry-after") or 2 ** attempt))
                continue
            if response.status_code >= 400:
                raise RuntimeError(endpoints.clean(f"Anthropic {method} {url} answered HTTP {response.status_code}: "
                                                   f"{response.text[:500]}"))
            return response
        raise AssertionError("unreachable")

    @staticmethod
    def _remote(obj: dict[str, Any]) -> RemoteBatch:
        return RemoteBatch(id=obj["id"], status=STATUS.get(obj.get("processing_status"), "in_progress"),
                           output_file_id=obj.get("results_url"))

    # -- the protocol ---------------------------------------------------------
    def submit(self, batch_id: str, data: bytes, n: int, record: Callable[..., None]) -> RemoteBatch:
        requests = [{"custom_id": line["custom_id"], "params": params_of(line["body"])}
                    for line in jsonl_lines(data.decode())]
        record(input_file_id="inline")  # nothing is uploaded; from here on a batch may exist
        return self._remote(self._call("POST", self.url, {"requests": requests}, create=True).json())

    def find(self, batch_id: str, row: dict[str, Any]) -> RemoteBatch | None:
        since = _when(row["created_at"])
        claimed = self.claimed()
        for obj in self._call("GET", self.url + "?limit=100").json().get("data") or []:
            counts = obj.get("request_counts") or {}
            created = _when(obj.get("created_at"))
            if (obj["id"] not in claimed and sum(counts.values()) == row["n_requests"] and since and created
                    and created >= since - CLOCK_SLACK):
                return self._remote(obj)
        return None

    def retrieve(self, row: dict[str, Any]) -> RemoteBatch:
        return self._remote(self._call("GET", f"{self.url}/{row['provider_batch_id']}").json())

    def results(self, remote: RemoteBatch) -> Iterator[dict[str, Any]]:
        if not remote.output_file_id:
            return
        for entry in jsonl_lines(self._call("GET", remote.output_file_id).text):
            yield output_line(entry)
