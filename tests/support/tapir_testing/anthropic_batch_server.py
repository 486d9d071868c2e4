"""A local stand-in for Anthropic's Message Batches API, for TESTS ONLY.

Standard library only (``http.server``) on ``127.0.0.1``; the shape follows
Anthropic's published API (version 2023-06-01):

* ``POST /v1/messages/batches`` ``{"requests": [{"custom_id", "params"}]}``
  -> a ``message_batch`` (``processing_status: in_progress``,
  ``request_counts``). Refused with HTTP 400 (``invalid_request_error``)
  when a ``custom_id`` is not ``^[a-zA-Z0-9_-]{1,64}$`` or repeats, or a
  ``params`` lacks ``model`` / ``max_tokens`` / ``messages`` or holds a
  message whose role is not ``user`` / ``assistant``; HTTP 401 without an
  ``x-api-key``, 400 without ``anthropic-version``.
* ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches`` (newest
  first, ``data``), ``GET /v1/messages/batches/{id}/results`` (JSONL,
  ``results_url`` of an ended batch).

``reply(params)`` answers each request: a ``str`` (the text), or
``errored("...")`` for an ``errored`` result line. A batch ends after
``latency`` seconds, and only once ``hold`` (a ``threading.Event``) is set
when one is given. ``created`` counts batches created, ``lines`` requests
answered, ``keys`` the ``x-api-key`` values seen, ``batches`` keeps each
created batch's requests as received.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class errored(str):  # noqa: N801 - reads as a verb in reply functions
    """A reply that makes the request's result line ``errored``."""


def _echo(params: dict) -> str:
    return "echo: " + params["messages"][-1]["content"]


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class AnthropicBatchServer:
    def __init__(self, reply: Callable[[dict], str] = _echo, latency: float = 0.0,
                 hold: threading.Event | None = None):
        self.reply = reply
        self.latency = latency
        self.hold = hold
        self.created = 0
        self.lines = 0
        self.keys: set[str] = set()
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "AnthropicBatchServer":
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.hold is not None:
            self.hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- batches ------------------------------------------------------------
    def _public(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _create(self, body: dict) -> tuple[int, dict]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, _error("invalid_request_error", "requests: a non-empty list is required")
        seen: set[str] = set()
        for n, request in enumerate(requests):
            key, params = request.get("custom_id"), request.get("params") or {}
            if not isinstance(key, str) or not CUSTOM_ID.match(key) or key in seen:
                return 400, _error("invalid_request_error", f"requests.{n}.custom_id: invalid or repeated")
            seen.add(key)
            missing = [f for f in ("model", "max_tokens", "messages") if f not in params]
            if missing:
                return 400, _error("invalid_request_error", f"requests.{n}.params: {missing} required")
            if any(m.get("role") not in ("user", "assistant") for m in params["messages"]):
                return 400, _error("invalid_request_error", f"requests.{n}.params.messages: roles are user or "
                                                            "assistant (system goes in params.system)")
        with self._lock:
            self.created += 1
            batch_id = f"msgbatch_{self.created:06d}"
            batch = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                     "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                        "expired": 0},
                     "ended_at": None, "created_at": _stamp(), "expires_at": None, "archived_at": None,
                     "cancel_initiated_at": None, "results_url": None, "_requests": requests, "_results": None}
            self.batches[batch_id] = batch
        threading.Thread(target=self._run, args=(batch_id,), daemon=True).start()
        return 200, self._public(batch)

    def _run(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if self.hold is not None:
            self.hold.wait()
        time.sleep(self.latency)
        out = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for n, request in enumerate(batch["_requests"]):
            params = request["params"]
            answer = self.reply(params)
            if isinstance(answer, errored):
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": str(answer)}}}
            else:
                words = sum(len(str(m["content"]).split()) for m in params["messages"])
                result = {"type": "succeeded", "message": {
                    "id": f"msg_{batch_id}_{n}", "type": "message", "role": "assistant", "model": params["model"],
                    "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": words + 3, "output_tokens": len(answer.split())}}}
            counts[result["type"]] += 1
            out.append({"custom_id": request["custom_id"], "result": result})
        with self._lock:
            self.lines += len(out)
            batch["_results"] = "".join(json.dumps(o) + "\n" for o in out)
            batch.update(processing_status="ended", request_counts=counts, ended_at=_stamp(),
                         results_url=f"{self.base_url}/v1/messages/batches/{batch_id}/results")

    def handle(self, method: str, path: str, headers: dict[str, str], body: dict | None) -> tuple[int, Any]:
        if not headers.get("x-api-key"):
            return 401, _error("authentication_error", "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return 400, _error("invalid_request_error", "anthropic-version header is required")
        self.keys.add(headers["x-api-key"])
        path = path.split("?", 1)[0].rstrip("/")
        if method == "POST" and path == "/v1/messages/batches":
            return self._create(body or {})
        if method == "GET" and path == "/v1/messages/batches":
            with self._lock:
                data = [self._public(b) for b in reversed(list(self.batches.values()))]
            return 200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}
        match = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
        if method == "GET" and match and match.group(1) in self.batches:
            batch = self.batches[match.group(1)]
            if match.group(2):
                if batch["_results"] is None:
                    return 404, _error("not_found_error", "results are available once the batch has ended")
                return 200, batch["_results"]
            return 200, self._public(batch)
        return 404, _error("not_found_error", f"{method} {path}")


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    server_owner: AnthropicBatchServer

    def log_message(self, *args) -> None:
        pass

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.server_owner.handle(method, self.path, headers, body)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/binary" if isinstance(payload, str) else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")
