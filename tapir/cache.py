"""The LLM-call cache, kept in the ``llm_calls`` table.

The key is a hash of the model id, the resolved generation parameters, the
messages and the sample index, so

* a second model never reads the first model's answers,
* greedy and sampled calls never mix, and
* ``n`` distinct samples at temperature > 0 are ``n`` keys.

Every call (hit or miss) is recorded with tokens, cost, latency and error;
only calls without an error are served as answers later.

A call is claimed before it is sent (a ``call:<key>`` row in ``locks``), so
two processes on one database never pay for the same call at once: the
second waits for the first's answer, and sends the call itself only when
the first failed or died.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Sequence

from tapir.roles import Backend, Closable, Completion, GenerationParams, GenerationRequest, OnResult
from tapir.store import calls, locks
from tapir.store.db import Store, dumps, utcnow

_META = ("stage_key", "role", "item_id", "round")
_WAIT_POLL_S = 0.2


def cache_key(model_id: str, request: GenerationRequest) -> str:
    """The cache key of ``request`` to ``model_id``: the SHA-256 of
    ``dumps({"model", "params", "messages", "sample"})``."""
    return encode_request(model_id, request)[0]


_PARAMS_JSON: dict[tuple, str] = {}  # a parameter set's fields (with their types) -> dumps(resolved())
_PARAMS_JSON_MAX = 1024


def params_json(params: GenerationParams) -> str:
    """``dumps(params.resolved())``, encoded once per distinct parameter
    set (a stage sends thousands of calls with the same one)."""
    values = tuple(vars(params).values())
    try:
        shape = (type(params), values, tuple(map(type, values)))  # 1 and True, 0 and 0.0 are different parameters
        text = _PARAMS_JSON.get(shape)
    except TypeError:  # a field holds a list (stop): not hashable, encoded each time
        return dumps(params.resolved())
    if text is None:
        if len(_PARAMS_JSON) >= _PARAMS_JSON_MAX:
            _PARAMS_JSON.clear()
        text = _PARAMS_JSON[shape] = dumps(params.resolved())
    return text


@functools.lru_cache(maxsize=256)
def _model_json(model_id: str) -> str:
    return dumps(model_id)


def encode_request(model_id: str, request: GenerationRequest) -> tuple[str, str, str]:
    """(cache key, params JSON, messages JSON) of ``request``: the JSON
    texts are the ``llm_calls`` columns, and the key's payload is built
    from them, byte for byte the text ``dumps`` gives for the payload dict
    (sorted keys: messages, model, params, sample), so each part is
    encoded once per call."""
    params = params_json(request.params)
    messages = dumps(request.messages)
    sample = str(request.sample) if type(request.sample) is int else dumps(request.sample)  # an int's JSON is its str
    model = _model_json(model_id)
    payload = f'{{"messages": {messages}, "model": {model}, "params": {params}, "sample": {sample}}}'
    return hashlib.sha256(payload.encode()).hexdigest(), params, messages


class CachedBackend:
    """Wraps any backend so that every call goes through ``llm_calls``."""

    def __init__(self, backend: Backend, store: Store, run_id: str | None = None, refresh: bool = False):
        self.backend = backend
        self.store = store
        self.run_id = run_id
        self.refresh = refresh  # skip look-ups (``--force``); new calls are still recorded
        self.model_id = backend.model_id
        self.calls_made = 0  # misses sent to the backend in this object's life
        self.hits = 0
        self.waited = 0  # calls another process was paying for, whose answer we waited for
        self.tags: dict = {}  # role, stage_key, round recorded with each call (request.meta wins)
        self._lock = threading.Lock()

    def __getattr__(self, name):  # score(), tokenizer, ... pass through
        return getattr(self.backend, name)

    def close(self) -> None:
        """Free what the wrapped backend holds (:class:`tapir.roles.Closable`);
        the cache itself holds nothing to free."""
        if isinstance(self.backend, Closable):
            self.backend.close()

    def lookup(self, keys: Sequence[str]) -> dict[str, Completion]:
        return {key: Completion(text=a.text, logprobs=a.logprobs, prompt_tokens=a.prompt_tokens,
                                completion_tokens=a.completion_tokens, cost=a.cost, cached=True, call_id=a.call_id,
                                finish_reason=a.finish_reason, provider_model=a.provider_model,
                                system_fingerprint=a.system_fingerprint)
                for key, a in calls.first_answers(self.store, keys).items()}

    def _record(self, key: str, request: GenerationRequest, encoded: tuple[str, str], completion: Completion,
                unclaim: bool = False) -> None:
        """Store one call; with ``unclaim`` its claim is released in the same
        commit. ``encoded``: the request's (params, messages) JSON, as
        :func:`encode_request` made them. Inside the caller's
        :meth:`~tapir.store.db.Store.transaction`, the row commits with it."""
        params, messages = encoded
        meta, tags = request.meta, self.tags
        row = {
            "key": key,
            "model": self.model_id,
            "params": params,
            "messages": messages,
            "sample": request.sample,
            "response": None if completion.error else completion.text,
            "logprobs": calls.encode_logprobs(completion.logprobs),
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost": completion.cost,
            "latency_s": completion.latency_s,
            "error": completion.error,
            "run_id": self.run_id,
            "created_at": utcnow(),
            "finish_reason": completion.finish_reason,
            "provider_model": completion.provider_model,
            "system_fingerprint": completion.system_fingerprint,
            "attempts": len(completion.attempts) if completion.attempts is not None else None,
            "attempt_log": dumps(completion.attempts) if completion.attempts else None,
            "failure_kind": completion.failure_kind,
            **{k: meta.get(k, tags.get(k)) for k in _META},
        }
        # A prepared INSERT is ~10x cheaper than table.insert(); the store's
        # transaction serialises threads, self._lock only the counters.
        release = "call:" + key if unclaim and self.store.path is not None else None
        completion.call_id = calls.record_call(self.store, row, release)
        with self._lock:
            self.calls_made += 1

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        encoded = [encode_request(self.model_id, r) for r in requests]
        keys = [e[0] for e in encoded]
        hits = {} if self.refresh else self.lookup(keys)
        results: list[Completion | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in hits:
                self._deliver(results, [i], hits[key], on_result)
                self.hits += 1
            else:
                todo.setdefault(key, []).append(i)
        while todo:
            mine, theirs = self._claim(list(todo))
            if mine:
                self._send(requests, encoded, todo, mine, results, on_result)
            for key in mine:
                del todo[key]
            if theirs:
                self._wait_for(todo, theirs, results, on_result)
        return [r if r is not None else Completion(error="no result") for r in results]

    @staticmethod
    def _deliver(results, indices, completion, on_result) -> None:
        for i in indices:
            results[i] = completion
            if on_result:
                on_result(i, completion)

    def _send(self, requests, encoded, todo, keys, results, on_result) -> None:
        role = self.tags.get("role")
        # The backend learns who asks (a budget per role is checked before each call).
        miss_requests = [r if role is None or "role" in r.meta else replace(r, meta={**r.meta, "role": role})
                         for r in (requests[todo[k][0]] for k in keys)]
        record = _Recorder(self, keys, miss_requests, encoded, todo, results, on_result)
        try:
            returned = self.backend.generate(miss_requests, on_result=record)
            # Backends must call on_result; tolerate ones that only return.
            for j, completion in enumerate(returned):
                if results[todo[keys[j]][0]] is None:
                    record(j, completion)
        finally:
            self._unclaim(keys)

    def _record_one(self, key: str, request: GenerationRequest, encoded: tuple[str, str], completion: Completion,
                    indices: list[int], results, on_result, unclaim: bool = True) -> None:
        """Record a paid call and hand it to the stage, in one transaction
        (joined by a group's, see :class:`_Recorder`): its llm_calls row, its
        claim's release and what the stage writes for it (its response,
        outcome rows) commit together, so a crash loses at most the results
        in hand. ``unclaim=False``: the caller releases the claim in the same
        transaction (a burst releases its calls' claims at once)."""
        failure = None
        # In a burst's transaction a failing record is not undone alone: its
        # row is one INSERT (all or nothing), and the claim's release after it
        # is repeated by _unclaim; the burst's other calls are kept.
        with self.store.transaction():
            self._record(key, request, encoded, completion, unclaim=unclaim)
            try:
                self._deliver(results, indices, completion, on_result)
            except BaseException as exc:
                # The call is paid for: its row commits, with what the stage wrote before it raised.
                failure = exc
        if failure is not None:
            raise failure

    # -- claims: one process pays for a call at a time ---------------------------

    def _claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Split ``keys`` into those this process now owns and those a live
        process is sending. In-memory stores have no other process."""
        if self.store.path is None:
            return keys, []
        with self._lock:
            mine, theirs = locks.claim_many(self.store.db.conn, ["call:" + k for k in keys], utcnow)
        return [name[5:] for name in mine], [name[5:] for name in theirs]

    def _unclaim(self, keys: Sequence[str]) -> None:
        if self.store.path is None or not keys:
            return
        with self._lock:
            locks.drop_many(self.store.db.conn, ["call:" + k for k in keys])

    def _wait_for(self, todo, keys, results, on_result) -> None:
        """Wait until another process's calls are answered (served from the
        cache) or released unanswered (then they are claimed again)."""
        pending = set(keys)
        while pending:
            time.sleep(_WAIT_POLL_S)
            found = self.lookup(list(pending))
            for key, completion in found.items():
                self.waited += 1
                self._deliver(results, todo.pop(key), completion, on_result)
                pending.discard(key)
            if not pending:
                return
            still = {name[5:] for name in locks.live_of(self.store.db.conn, ["call:" + k for k in pending])}
            # Released without an answer (their call failed) or holder died: ours to send.
            pending &= still


class _Recorder:
    """The ``on_result`` the cache gives its backend: records each paid call
    and hands it to the stage. It is :class:`~tapir.roles.GroupedResults`:
    the results a backend delivers together (:func:`tapir.roles.deliver`)
    share one transaction, one commit per burst instead of one per call."""

    def __init__(self, cache: CachedBackend, keys, requests, encoded, todo, results, on_result):
        self.cache, self.keys, self.requests, self.encoded = cache, keys, requests, encoded
        self.todo, self.results, self.on_result = todo, results, on_result
        self.last = time.perf_counter()
        self.released: list[str] | None = None  # in a group: the claims its recorded calls let go of at its end
        self.failure: BaseException | None = None  # in a group: the first exception, raised at its end
        self.stopped = False  # an exception came out: later results are recorded, not handed to the stage

    def __call__(self, j: int, completion: Completion) -> None:
        key = self.keys[j]
        now = time.perf_counter()
        if completion.latency_s is None:
            # A backend that times nothing: the time since the previous
            # result (or the start), so a call's latency is its own and
            # the sum over a batch is the batch's time, not n times it.
            completion.latency_s = now - self.last
        self.last = now
        indices = self.todo[key]
        released = self.released
        # Once the stage (or a record) has raised, the answers still coming are
        # recorded (they are paid for: a re-run is served them from the cache),
        # no longer handed to the stage.
        on_result = None if self.stopped else self.on_result
        # Delivered alone (no group): recorded, handed over and its claim released in its own commit.
        if released is not None and self.cache.store.path is not None:
            released.append("call:" + key)  # before the record: a stage raising still releases it
        try:
            self.cache._record_one(key, self.requests[j], self.encoded[indices[0]][1:], completion, indices,
                                   self.results, on_result, unclaim=released is None)
        except BaseException as exc:
            self.stopped = True
            if released is None:
                raise
            if self.failure is None:  # in a group: the rest is still recorded, the first failure raised at its end
                self.failure = exc

    @contextmanager
    def group(self) -> Iterator[None]:
        """One transaction for the results delivered inside. An exception (the
        stage's, an interrupt, a row that failed to store) does not lose the
        group's paid calls: those before it and those after it in the group are
        recorded and committed, and the first exception is raised at the end."""
        failure = None
        self.released, self.failure = [], None
        try:
            with self.cache.store.transaction() as conn:
                try:
                    yield
                except BaseException as exc:
                    failure, self.stopped = exc, True
                locks.drop_many_in_transaction(conn, self.released)
        finally:
            self.released = None
            first, self.failure = self.failure, None
        failure = first or failure
        if failure is not None:
            raise failure
