"""A local OpenAI-compatible HTTP server for TESTS AND BENCHMARKS ONLY.

Nothing in the product uses this module; it exists so tests and speed
benchmarks can drive real HTTP clients (litellm, the ``openai`` package)
against a server on ``127.0.0.1`` with no network and no API key. It uses
only the standard library (``http.server.ThreadingHTTPServer``).

Scripting API
=============

.. code-block:: python

    from tapir_testing.openai_server import OpenAIServer, Faults, fault, token_distribution

    def reply(messages, body):
        # messages: the request's chat messages; body: the whole JSON request
        return "Rating: [[8]]"                      # a plain answer, or
        return {"text": "8", "logprobs": token_distribution({"8": .7, "7": .2, "9": .1})}

    with OpenAIServer(reply=reply, latency=0.1) as srv:
        srv.base_url        # "http://127.0.0.1:PORT/v1"; use model "openai/<anything>"
        # tapir: load_backend("openai/judge", {"api_base": srv.base_url}) (any key works)
        # litellm: acompletion(model="openai/m", api_base=srv.base_url, api_key="x", ...)
        srv.requests        # chat-completion requests received (faulty ones included)
        srv.peak_in_flight  # most requests being handled at one moment
        srv.status_counts   # Counter: {200: 37, 429: 2, 500: 1, "drop": 1}
        srv.faults_injected # Counter by fault kind
        srv.bodies          # every request body received, in arrival order
        srv.headers         # their HTTP headers (lower-case names)
        srv.stats()         # all counters in one dict; srv.reset_counts() zeroes them

Batch API (OpenAI's files and batches endpoints): ``POST /v1/files``
(multipart upload), ``GET /v1/files/{id}`` and ``/v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` (list, newest first),
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch's lines
are answered by ``reply`` (a ``fault(...)`` becomes a line in the error
file) after ``batch_latency`` seconds, and only once ``batch_hold`` (a
``threading.Event``) is set when one is given; ``stats()["batch_counts"]``
counts ``files_created``, ``batches_created`` and ``batch_lines``. Batch
lines do not count as chat-completion ``requests``.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``. A request is
answered in the OpenAI format with ``usage`` (prompt tokens = whitespace
words of each message + 3 per message, completion tokens = whitespace
pieces of the answer, unless ``reply`` gives its own counts).
``peak_in_flight`` counts a request from arrival until just before its
answer is written, so a client that keeps N requests open sees exactly N.

``reply(messages, body)`` returns

* a ``str``: the answer text;
* a ``dict`` with ``text`` and optionally ``logprobs`` (a list of per-token
  entries, each ``(token, logprob, [(alt, logprob), ...])`` or an OpenAI
  ``{"token", "logprob", "top_logprobs"}`` dict; :func:`token_distribution`
  builds a one-token entry from ``{token: probability}``), ``prompt_tokens``,
  ``completion_tokens``, ``finish_reason``, ``model`` (the model the answer
  says answered; default the one asked for), ``system_fingerprint``
  (sent only when given); ``logprobs: False`` answers a request that asked
  for logprobs without them (as FastChat's server does);
* ``fault(kind)``: inject a fault for this request (see below), e.g. to make
  one particular question always fail.

The default reply echoes the last user message as ``"echo: ..."``.

When the request has ``logprobs: true`` the answer carries
``choices[0].logprobs.content`` with ``top_logprobs`` alternatives (at most
``top_logprobs`` of them). If ``reply`` gave no logprobs, each
whitespace-separated piece of the text becomes a token with logprob 0.

``latency``: seconds every answer waits (a float), or ``fn(index, body)``.

Fault injection (``faults=``), deterministic by request index (arrival
order, counting from 0):

* ``Faults(rates={"429": .1, "500": .1, "slow": .05, "malformed": .05,
  "drop": .05}, seed=0)``: each request index draws its fault from a
  ``random.Random`` seeded by ``(seed, index)``;
* ``Faults(pattern=["429", None, "500"])`` (or a plain list): explicit kinds
  for the first requests, normal answers after;
* a callable ``fn(index, body) -> kind | None``;
* a ``dict`` is read as ``rates``.

Kinds: ``"429"`` (rate limited, with a ``Retry-After`` header of
``Faults.retry_after`` seconds), any other HTTP status as a string such as
``"500"`` or ``"503"``, ``"slow"`` (answers after ``Faults.slow_seconds``,
meant to exceed the client's timeout), ``"malformed"`` (status 200 with a
body that is not JSON), ``"empty"`` (status 200, JSON without choices),
``"drop"`` (the connection is closed with no response); and provider
errors with OpenAI's bodies: ``"quota"`` (429, ``insufficient_quota``: out
of credit, no Retry-After), ``"model_not_found"`` (404, ``model_not_found``),
``"context_length"`` (400, ``context_length_exceeded``). A plain ``"401"``
or ``"403"`` answers with an ``invalid_api_key`` body.

``max_active=K`` serves at most K chat requests at once, like an inference
server with K generation slots (FastChat's ``--limit-worker-concurrency``):
the rest wait in a queue, in arrival order, and their latency starts when a
slot frees. A request whose client went away while it waited is still
generated, as a real server does. ``stats()["generations"]`` counts the
generations run (answers written or not), ``["peak_active"]`` the most
served at once, ``["active"]`` those being served now; ``peak_in_flight``
counts queued requests too.

``srv.arrivals`` lists the ``time.monotonic()`` of every chat request's
arrival (``stats()["arrivals"]``); ``srv.max_in_window(seconds)`` is the most
that arrived within any window of that length (rate-limit tests).

The server runs in a daemon thread on an ephemeral port; ``stop()`` (or
leaving the ``with`` block) shuts it down and wakes sleeping slow answers.

``process=True`` serves from a forked child process instead, so the
server's CPU work does not compete with the client under test for the GIL
(benchmarks use it; a real API is in another process too). The counters
read the same (they are fetched from the child over HTTP, ``GET
/_tapir/stats``); ``reset_counts()`` works; changing ``reply``, ``latency``
or ``faults`` after ``start()`` does not reach the child. ``stats()``
returns all counters in one dict.
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

__all__ = ["OpenAIServer", "Faults", "Fault", "fault", "token_distribution"]

FAULT_KINDS = ("429", "500", "502", "503", "slow", "malformed", "empty", "drop")
# Provider errors in OpenAI's format: (status, type, code, message).
PROVIDER_ERRORS = {
    "quota": (429, "insufficient_quota", "insufficient_quota",
              "You exceeded your current quota, please check your plan and billing details."),
    "model_not_found": (404, "invalid_request_error", "model_not_found",
                        "The model `{model}` does not exist or you do not have access to it."),
    "context_length": (400, "invalid_request_error", "context_length_exceeded",
                       "This model's maximum context length is 4096 tokens. However, your messages resulted in "
                       "9000 tokens. Please reduce the length of the messages."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-te****0000."),
    "403": (403, "invalid_request_error", "model_access_denied",
            "Your project does not have access to model `{model}`."),
}

Reply = Callable[[list[dict], dict], Any]


@dataclass(frozen=True)
class Fault:
    """Returned by a reply function to inject a fault for one request."""

    kind: str


def fault(kind: str) -> Fault:
    """A fault for one request: ``"429"``, ``"500"``, ``"slow"``, ``"malformed"``,
    ``"empty"``, ``"drop"`` (any HTTP status string also works)."""
    return Fault(str(kind))


def token_distribution(dist: dict[str, float], chosen: str | None = None) -> list[tuple[str, float, list]]:
    """One-token logprobs from ``{token: probability}``: the chosen token
    (default the most likely) with every entry as a top alternative,
    most likely first."""
    top = [(tok, math.log(p)) for tok, p in sorted(dist.items(), key=lambda kv: -kv[1]) if p > 0]
    token = chosen if chosen is not None else top[0][0]
    logprob = dict(top).get(token, -100.0)
    return [(token, logprob, top)]


@dataclass
class Faults:
    """Which requests fail, and how (see the module docstring)."""

    rates: dict[str, float] = field(default_factory=dict)
    pattern: Sequence[str | None] = ()
    seed: int = 0
    retry_after: float = 0.01
    slow_seconds: float = 5.0

    def pick(self, index: int) -> str | None:
        if index < len(self.pattern):
            kind = self.pattern[index]
            return None if kind in (None, "", "ok") else str(kind)
        if self.rates:
            draw = random.Random(f"{self.seed}:{index}").random()
            edge = 0.0
            for kind, rate in self.rates.items():
                edge += rate
                if draw < edge:
                    return str(kind)
        return None


def _default_reply(messages: list[dict], body: dict) -> str:
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"echo: {last}"


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _count_prompt_tokens(messages: list[dict]) -> int:
    total = 0
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += len(str(content).split()) + 3
    return total


def _logprob_entry(entry: Any, k: int) -> dict:
    if isinstance(entry, dict):
        token, logprob = entry["token"], float(entry["logprob"])
        top = [(t["token"], float(t["logprob"])) for t in entry.get("top_logprobs", [])]
    else:
        alternatives = entry[2] if len(entry) > 2 else []
        token, logprob, top = entry[0], float(entry[1]), [(t, float(lp)) for t, lp in alternatives]
    if not top:
        top = [(token, logprob)]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[: max(k, 0)]],
    }


class OpenAIServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (tests and
    benchmarks only). Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        reply: Reply | None = None,
        *,
        latency: float | Callable[[int, dict], float] = 0.0,
        faults: Faults | dict | Sequence[str | None] | Callable[[int, dict], str | None] | None = None,
        model: str = "test-model",
        host: str = "127.0.0.1",
        port: int = 0,
        process: bool = False,
        batch_latency: float = 0.0,
        batch_hold: threading.Event | None = None,
        max_active: int | None = None,
    ):
        self.reply = reply or _default_reply
        self.max_active = max_active  # generation slots; None: every request is served at once
        self._queue = threading.Condition()  # max_active: requests wait here, first come first served
        self._waiting: list[object] = []
        self._serving = 0
        self.batch_latency = batch_latency  # seconds a batch stays in_progress before it completes
        self.batch_hold = batch_hold  # if given, batches complete only once it is set
        self._files: dict[str, dict] = {}
        self._batches: dict[str, dict] = {}
        self.latency = latency
        if isinstance(faults, dict):
            faults = Faults(rates=faults)
        elif isinstance(faults, (list, tuple)):
            faults = Faults(pattern=list(faults))
        self.faults = faults
        self.model = model
        self.host = host
        self.port = port
        self.process = process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._child = None
        self._pipe = None
        self._reset_local()

    # -- counters -----------------------------------------------------------
    def _reset_local(self) -> None:
        with self._lock:
            self._requests = 0
            self._in_flight = 0
            self._peak = 0
            self._statuses: Counter = Counter()
            self._faults_seen: Counter = Counter()
            self._bodies: list[dict] = []
            self._headers: list[dict[str, str]] = []
            self._batch_counts: Counter = Counter()  # files_created, batches_created, batch_lines, ...
            self._arrivals: list[float] = []
            self._generations = 0
            self._active = 0
            self._peak_active = 0

    def reset_counts(self) -> None:
        """Zero every counter (requests, peak, statuses, faults, bodies)."""
        if self._child is not None:
            self._remote("POST", "/_tapir/reset")
        else:
            self._reset_local()

    def stats(self, bodies: bool = False) -> dict[str, Any]:
        """A snapshot of the counters as one dict (``bodies`` too if asked)."""
        if self._child is not None:
            data = self._remote("GET", "/_tapir/stats" + ("?bodies=1" if bodies else ""))
            data["status_counts"] = Counter({int(k) if k.isdigit() else k: v for k, v in data["status_counts"].items()})
            data["faults_injected"] = Counter(data["faults_injected"])
            data["batch_counts"] = Counter(data.get("batch_counts", {}))
            return data
        with self._lock:
            data = {
                "requests": self._requests,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak,
                "status_counts": Counter(self._statuses),
                "faults_injected": Counter(self._faults_seen),
                "batch_counts": Counter(self._batch_counts),
                "arrivals": list(self._arrivals),
                "generations": self._generations,
                "active": self._active,
                "peak_active": self._peak_active,
            }
            if bodies:
                data["bodies"] = list(self._bodies)
                data["headers"] = list(self._headers)
        return data

    @property
    def requests(self) -> int:
        """Chat-completion requests received (faulty ones included)."""
        return self.stats()["requests"]

    @property
    def arrivals(self) -> list[float]:
        """``time.monotonic()`` of each chat request's arrival, in order."""
        return self.stats()["arrivals"]

    def max_in_window(self, seconds: float) -> int:
        """The most chat requests that arrived within any ``seconds`` long window."""
        times = sorted(self.arrivals)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    @property
    def in_flight(self) -> int:
        return self.stats()["in_flight"]

    @property
    def peak_in_flight(self) -> int:
        """The most requests in progress at one moment since the last reset."""
        return self.stats()["peak_in_flight"]

    @property
    def status_counts(self) -> Counter:
        """Responses by HTTP status (``"drop"`` for closed connections)."""
        return self.stats()["status_counts"]

    @property
    def faults_injected(self) -> Counter:
        return self.stats()["faults_injected"]

    @property
    def bodies(self) -> list[dict]:
        """Every request body received, in arrival order."""
        return self.stats(bodies=True)["bodies"]

    @property
    def headers(self) -> list[dict[str, str]]:
        """The HTTP headers of every request (lower-case names), in arrival order."""
        return self.stats(bodies=True)["headers"]

    def _remote(self, method: str, path: str) -> Any:
        import urllib.request

        request = urllib.request.Request(f"http://{self.host}:{self.port}{path}", method=method,
                                         data=b"{}" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "OpenAIServer":
        """Start serving (in a thread, or in a forked child with ``process=True``)."""
        if self.process:
            return self._start_process()
        server = self

        class Handler(_Handler):
            owner = server

        class HTTPServer(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many clients connect at once

        self._stop.clear()
        self._httpd = HTTPServer((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _start_process(self) -> "OpenAIServer":
        # fork: the reply function may be any callable, closures included.
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        parent_end, child_end = ctx.Pipe()
        self._child = ctx.Process(target=_serve_child, args=(self, child_end), daemon=True,
                                  name="tapir-openai-server")
        self._child.start()
        child_end.close()
        if not parent_end.poll(30):
            self._child.kill()
            self._child = None
            raise RuntimeError("the OpenAI test server process did not start within 30 s")
        self.port = parent_end.recv()
        self._pipe = parent_end
        return self

    def stop(self) -> None:
        """Stop serving; sleeping slow answers wake up and end."""
        if self._child is not None:
            try:
                self._pipe.send("stop")
            except OSError:
                pass
            self._child.join(timeout=5)
            if self._child.is_alive():
                self._child.kill()
                self._child.join(timeout=5)
            self._pipe.close()
            self._child = self._pipe = None
            return
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def kill(self) -> None:
        """Die abruptly: SIGKILL the child (``process=True``), or in thread mode
        stop listening and close every connection without an answer."""
        if self._child is not None:
            self._child.kill()
            self._child.join(timeout=5)
            try:
                self._pipe.close()
            except OSError:
                pass
            self._child = self._pipe = None
            return
        self.stop()

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling (called from handler threads) ---------------------
    def _begin(self, body: dict, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
        with self._lock:
            index = self._requests
            self._requests += 1
            self._arrivals.append(time.monotonic())
            self._bodies.append(body)
            self._headers.append(headers or {})
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        kind = None
        if callable(self.faults):
            kind = self.faults(index, body)
        elif self.faults is not None:
            kind = self.faults.pick(index)
        if kind:
            self._mark_fault(kind)
        return index, kind

    def _end(self, status: int | str, kind: str | None) -> None:
        with self._lock:
            self._in_flight -= 1
            self._statuses[status] += 1

    def _mark_fault(self, kind: str) -> None:
        with self._lock:
            self._faults_seen[kind] += 1

    def _take_slot(self) -> None:
        """Wait for a generation slot (``max_active``), then count the request as served."""
        if self.max_active:
            with self._queue:
                me = object()
                self._waiting.append(me)
                while not (self._waiting[0] is me and self._serving < self.max_active) and not self._stop.is_set():
                    self._queue.wait(0.05)
                self._waiting.remove(me)
                self._serving += 1
                self._queue.notify_all()
        with self._lock:
            self._active += 1
            self._peak_active = max(self._peak_active, self._active)

    def _free_slot(self, generated: bool) -> None:
        with self._lock:
            self._active -= 1
            self._generations += int(generated)
        if self.max_active:
            with self._queue:
                self._serving -= 1
                self._queue.notify_all()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False if it stopped."""
        if seconds > 0:
            return not self._stop.wait(seconds)
        return True

    def _completion(self, index: int, body: dict, answer: Any) -> dict:
        if isinstance(answer, str):
            answer = {"text": answer}
        text = str(answer.get("text", ""))
        messages = body.get("messages") or []
        completion = {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.get("model", body.get("model", self.model)),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": answer.get("finish_reason", "stop"),
                    "logprobs": None,
                }
            ],
            "usage": {},
        }
        if "system_fingerprint" in answer:
            completion["system_fingerprint"] = answer["system_fingerprint"]
        toks = _tokens(text)
        if body.get("logprobs") and answer.get("logprobs") is not False:
            k = int(body.get("top_logprobs") or 0)
            entries = answer.get("logprobs")
            if entries is None:
                entries = [(t, 0.0, [(t, 0.0)]) for t in toks]
            completion["choices"][0]["logprobs"] = {"content": [_logprob_entry(e, k) for e in entries]}
        pt = int(answer.get("prompt_tokens", _count_prompt_tokens(messages)))
        ct = int(answer.get("completion_tokens", len(toks)))
        completion["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        return completion


# -- files and batches (the OpenAI batch API) ---------------------------------
def _file_object(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "data"}


def _new_file(srv: OpenAIServer, data: bytes, filename: str, purpose: str) -> dict:
    with srv._lock:
        file_id = f"file-{len(srv._files) + 1:06d}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "data": data}
        srv._files[file_id] = meta
        srv._batch_counts["files_created"] += 1
    return meta


def _create_batch(srv: OpenAIServer, body: dict) -> tuple[int, dict]:
    input_id = body.get("input_file_id")
    if input_id not in srv._files:
        return 400, {"error": {"message": f"no file {input_id}", "type": "invalid_request_error"}}
    with srv._lock:
        batch_id = f"batch_{len(srv._batches) + 1:06d}"
        batch = {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": input_id, "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata") or None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        srv._batches[batch_id] = batch
        srv._batch_counts["batches_created"] += 1
    threading.Thread(target=_run_batch, args=(srv, batch_id), daemon=True, name=f"batch-{batch_id}").start()
    return 200, dict(batch)


def _run_batch(srv: OpenAIServer, batch_id: str) -> None:
    """Answer every line of the batch's input file with the server's reply
    function, after ``batch_latency`` (and once ``batch_hold`` is set)."""
    batch = srv._batches[batch_id]
    lines = [json.loads(line) for line in srv._files[batch["input_file_id"]]["data"].splitlines() if line.strip()]
    with srv._lock:
        batch["status"] = "in_progress"
        batch["request_counts"]["total"] = len(lines)
    if srv.batch_hold is not None:
        while not srv.batch_hold.wait(0.05):
            if srv._stop.is_set():
                return
    if not srv._sleep(srv.batch_latency):
        return
    out, errors = [], []
    for n, line in enumerate(lines):
        body = line.get("body") or {}
        try:
            answer = srv.reply(body.get("messages") or [], body)
        except Exception as exc:  # noqa: BLE001 - a broken reply function is a failed line
            answer = Fault(f"500:{exc}")
        if isinstance(answer, Fault):
            errors.append({"id": f"batch_req_{n}", "custom_id": line.get("custom_id"), "response": None,
                           "error": {"code": answer.kind, "message": f"injected fault {answer.kind}"}})
            continue
        completion = srv._completion(n, body, answer)
        out.append({"id": f"batch_req_{n}", "custom_id": line.get("custom_id"),
                    "response": {"status_code": 200, "request_id": f"req_{n}", "body": completion}, "error": None})
    with srv._lock:
        srv._batch_counts["batch_lines"] += len(lines)
    output = _new_file(srv, "".join(json.dumps(o) + "\n" for o in out).encode(), f"{batch_id}_output.jsonl",
                       "batch_output")
    error_file = _new_file(srv, "".join(json.dumps(o) + "\n" for o in errors).encode(),
                           f"{batch_id}_errors.jsonl", "batch_output") if errors else None
    with srv._lock:
        batch.update(status="completed", output_file_id=output["id"],
                     error_file_id=error_file["id"] if error_file else None, completed_at=int(time.time()))
        batch["request_counts"].update(completed=len(out), failed=len(errors))


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field: (filename, bytes)} (stdlib email parser)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _serve_child(server: OpenAIServer, conn) -> None:
    """Body of the forked server process: serve until the parent says stop."""
    import os

    try:
        server.process = False
        server._child = server._pipe = None
        server.start()
        conn.send(server.port)
        try:
            conn.recv()  # "stop", or EOF when the parent dies
        except EOFError:
            pass
        server.stop()
    finally:
        os._exit(0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection
    owner: OpenAIServer

    def log_message(self, format, *args):  # silence the default stderr log
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer
            pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        """Status line, headers and body in ONE write (with TCP_NODELAY set):
        the stdlib's two writes (headers, then body) with Nagle on stall each
        answer ~40 ms on delayed ACKs, which is what a benchmark would time."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")
        data = b"".join(self._headers_buffer) + payload
        self._headers_buffer = []
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. timed out)
            self.close_connection = True

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def do_GET(self):
        if self.path.startswith("/_tapir/stats"):
            data = self.owner.stats(bodies="bodies=1" in self.path)
            for name in ("status_counts", "faults_injected"):
                data[name] = {str(k): v for k, v in data[name].items()}
            self._json(200, data)
        elif "/files/" in self.path or "/batches" in self.path:
            self._batch_api_get(self.path.partition("?")[0].rstrip("/"))
        elif self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model",
                                                          "created": 0, "owned_by": "tapir-test"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _batch_api_get(self, path: str) -> None:
        srv = self.owner
        parts = path.split("/")
        if parts[-1] == "content" and parts[-3] == "files":
            meta = srv._files.get(parts[-2])
            if meta is None:
                return self._json(404, {"error": {"message": f"no file {parts[-2]}", "type": "not_found"}})
            return self._send(200, meta["data"], content_type="application/octet-stream")
        if parts[-2] == "files":
            meta = srv._files.get(parts[-1])
            if meta is None:
                return self._json(404, {"error": {"message": f"no file {parts[-1]}", "type": "not_found"}})
            return self._json(200, _file_object(meta))
        if parts[-1] == "batches":
            with srv._lock:
                data = [dict(b) for b in reversed(list(srv._batches.values()))]
            return self._json(200, {"object": "list", "data": data, "has_more": False,
                                    "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None})
        if parts[-2] == "batches":
            with srv._lock:
                batch = srv._batches.get(parts[-1])
                batch = dict(batch) if batch else None
            if batch is None:
                return self._json(404, {"error": {"message": f"no batch {parts[-1]}", "type": "not_found"}})
            return self._json(200, batch)
        self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def _batch_api_post(self, path: str, raw: bytes) -> None:
        srv = self.owner
        if path.endswith("/files"):
            fields = _parse_multipart(self.headers.get("Content-Type", ""), raw)
            filename, data = fields.get("file", (None, b""))
            purpose = fields.get("purpose", (None, b""))[1].decode()
            return self._json(200, _file_object(_new_file(srv, data, filename or "upload.jsonl", purpose)))
        if path.endswith("/batches"):
            status, obj = _create_batch(srv, json.loads(raw or b"{}"))
            return self._json(status, obj)
        if path.endswith("/cancel"):
            batch = srv._batches.get(path.split("/")[-2])
            if batch is None:
                return self._json(404, {"error": {"message": "no such batch", "type": "not_found"}})
            with srv._lock:
                if batch["status"] not in ("completed", "failed", "expired"):
                    batch["status"] = "cancelled"
            return self._json(200, dict(batch))
        self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.path = self.path.partition("?")[0]  # query parameters (e.g. ?api-key=) are not routes
        if self.path == "/_tapir/reset":
            self.owner.reset_counts()
            self._json(200, {"ok": True})
            return
        route = self.path.rstrip("/")
        if route.endswith(("/files", "/batches", "/cancel")):
            self._batch_api_post(route, raw)
            return
        if not route.endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}})
            return
        srv = self.owner
        index, kind = srv._begin(body, {k.lower(): v for k, v in self.headers.items()})
        counted = False

        def end(status: int | str) -> None:
            # Counted before the response is written: the client cannot see
            # an answer (and start its next request) while this one counts.
            nonlocal counted
            counted = True
            srv._end(status, kind)

        try:
            answer: Any = None
            slept = False
            srv._take_slot()  # queued here while max_active requests are being served
            try:
                if kind is None or kind == "slow":
                    try:
                        answer = srv.reply(body.get("messages") or [], body)
                    except Exception as exc:  # a broken reply function is a visible 500
                        answer = {"__error__": f"{type(exc).__name__}: {exc}"}
                    if isinstance(answer, Fault):
                        kind = answer.kind
                        srv._mark_fault(kind)
                delay = srv.latency(index, body) if callable(srv.latency) else float(srv.latency)
                if kind == "slow":
                    delay = max(delay, srv.faults.slow_seconds if isinstance(srv.faults, Faults) else 5.0)
                slept = srv._sleep(delay)
            finally:
                srv._free_slot(generated=slept and kind is None)
            if not slept:
                end("stopped")
                self.close_connection = True
                return
            if kind == "drop":
                end("drop")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            elif kind == "malformed":
                end(200)
                self._send(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "trunc')
            elif kind == "empty":
                end(200)
                self._json(200, {"id": "chatcmpl-empty", "object": "chat.completion", "choices": []})
            elif kind in PROVIDER_ERRORS:
                status, etype, code, message = PROVIDER_ERRORS[kind]
                end(status)
                self._json(status, {"error": {"message": message.replace("{model}", str(body.get("model"))),
                                              "type": etype, "param": None, "code": code}})
            elif kind is not None and kind != "slow":
                status = int(kind) if kind.isdigit() else 500
                headers = {}
                if status == 429:
                    retry = srv.faults.retry_after if isinstance(srv.faults, Faults) else 0.01
                    headers["Retry-After"] = f"{retry:g}"
                end(status)
                self._json(status, {"error": {"message": f"injected fault {kind}", "type": "server_error",
                                              "code": status}}, headers)
            elif isinstance(answer, dict) and "__error__" in answer:
                end(500)
                self._json(500, {"error": {"message": answer["__error__"], "type": "server_error"}})
            else:
                payload = json.dumps(srv._completion(index, body, answer)).encode()
                end(200)
                self._send(200, payload)
        finally:
            if not counted:
                srv._end("error", kind)
