"""The LLM-call cache, kept in the ``llm_calls`` table.

The key is a hash of the model id, the resolved generation parameters, the
messages and the sample index, so

* a second model never reads the first model's answers,
* greedy and sampled calls never mix, and
* ``n`` distinct samples at temperature > 0 are ``n`` keys.

Every call (hit or miss) is recorded with tokens, cost, latency and error;
only calls without an error are served as answers later.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Sequence

from tapir.roles import Backend, Completion, GenerationRequest, OnResult, TokenLogprob
from tapir.store.db import Store, dumps, utcnow

_LOOKUP_CHUNK = 500
_COLUMNS = ("key", "model", "params", "messages", "sample", "response", "logprobs", "prompt_tokens",
            "completion_tokens", "cost", "latency_s", "error", "run_id", "created_at")
_INSERT_SQL = f"insert into llm_calls ({', '.join(_COLUMNS)}) values ({', '.join('?' * len(_COLUMNS))})"


def cache_key(model_id: str, request: GenerationRequest) -> str:
    payload = {
        "model": model_id,
        "params": request.params.resolved(),
        "messages": request.messages,
        "sample": request.sample,
    }
    return hashlib.sha256(dumps(payload).encode()).hexdigest()


def _logprobs_to_json(logprobs: list[TokenLogprob] | None) -> str | None:
    if logprobs is None:
        return None
    return json.dumps([[t.token, t.logprob, t.top] for t in logprobs], ensure_ascii=False)


def _logprobs_from_json(text: str | None) -> list[TokenLogprob] | None:
    if text is None:
        return None
    return [TokenLogprob(tok, lp, [tuple(x) for x in top]) for tok, lp, top in json.loads(text)]


class CachedBackend:
    """Wraps any backend so that every call goes through ``llm_calls``."""

    def __init__(self, backend: Backend, store: Store, run_id: str | None = None):
        self.backend = backend
        self.store = store
        self.run_id = run_id
        self.model_id = backend.model_id
        self.calls_made = 0  # misses sent to the backend in this object's life
        self.hits = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):  # score(), tokenizer, ... pass through
        return getattr(self.backend, name)

    def lookup(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.store.execute(
                f"select id, key, response, logprobs, prompt_tokens, completion_tokens, cost "
                f"from llm_calls where error is null and key in ({marks}) order by id",
                chunk,
            ).fetchall()
            for call_id, key, response, logprobs, pt, ct, cost in rows:
                if key not in found:
                    found[key] = Completion(
                        text=response,
                        logprobs=_logprobs_from_json(logprobs),
                        prompt_tokens=pt,
                        completion_tokens=ct,
                        cost=cost,
                        cached=True,
                        call_id=call_id,
                    )
        return found

    def _record(self, key: str, request: GenerationRequest, completion: Completion) -> None:
        with self._lock:
            row = {
                "key": key,
                "model": self.model_id,
                "params": dumps(request.params.resolved()),
                "messages": dumps(request.messages),
                "sample": request.sample,
                "response": None if completion.error else completion.text,
                "logprobs": _logprobs_to_json(completion.logprobs),
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "cost": completion.cost,
                "latency_s": completion.latency_s,
                "error": completion.error,
                "run_id": self.run_id,
                "created_at": utcnow(),
            }
            # One committed row per call, so a crash loses nothing already
            # paid for; a prepared INSERT is ~10x cheaper than table.insert().
            conn = self.store.db.conn
            with conn:
                cursor = conn.execute(_INSERT_SQL, [row[c] for c in _COLUMNS])
            completion.call_id = cursor.lastrowid
            self.calls_made += 1

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        keys = [cache_key(self.model_id, r) for r in requests]
        hits = self.lookup(keys)
        results: list[Completion | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in hits:
                results[i] = hits[key]
                self.hits += 1
                if on_result:
                    on_result(i, hits[key])
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            miss_keys = list(todo)
            miss_requests = [requests[todo[k][0]] for k in miss_keys]

            def record(j: int, completion: Completion) -> None:
                key = miss_keys[j]
                if completion.latency_s is None:
                    completion.latency_s = time.perf_counter() - started
                self._record(key, miss_requests[j], completion)
                for i in todo[key]:
                    results[i] = completion
                    if on_result:
                        on_result(i, completion)

            started = time.perf_counter()
            returned = self.backend.generate(miss_requests, on_result=record)
            # Backends must call on_result; tolerate ones that only return.
            for j, completion in enumerate(returned):
                if results[todo[miss_keys[j]][0]] is None:
                    record(j, completion)
        return [r if r is not None else Completion(error="no result") for r in results]
