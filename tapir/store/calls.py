"""The ``llm_calls`` table: the cache's rows (:func:`record_call`,
:func:`first_answers`; ``logprobs`` encoded by :func:`encode_logprobs` and
read back only by :func:`decode_logprobs`) and the sums the pipeline, the
budget and ``tapir logs`` read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from tapir.roles import TokenLogprob
from tapir.store.db import Store
from tapir.store.locks import drop_in_transaction


def stage_call_totals(store: Store, stage_key: str, since: str) -> tuple[int, int, float, int, int]:
    """(calls, tokens, cost, truncated, attempts) of the calls made for
    ``stage_key`` since ``since`` (a stored timestamp)."""
    return store.execute(
        "select count(*), coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0), "
        "coalesce(sum(cost), 0), coalesce(sum(finish_reason = 'length'), 0), coalesce(sum(coalesce(attempts, 1)), 0) "
        "from llm_calls where stage_key = ? and created_at >= ?", [stage_key, since]).fetchone()


def maybe_billed_attempts(store: Store, stage_key: str, since: str) -> int:
    """Attempts of those calls that may have been billed without an answer
    (a timed-out request the provider may still have generated)."""
    return store.execute(
        "select count(*) from llm_calls c, json_each(c.attempt_log) a where c.stage_key = ? and c.created_at >= ? "
        "and c.attempt_log is not null and json_extract(a.value, '$.billed') = 'maybe'",
        [stage_key, since]).fetchone()[0]


def cost_by_role(store: Store, run_id: str) -> dict[str, float]:
    """What the calls recorded for ``run_id`` cost, by role (``other`` for
    calls without one)."""
    rows = store.execute("select coalesce(role, 'other'), coalesce(sum(cost), 0) from llm_calls where run_id = ? "
                         "group by 1", [run_id]).fetchall()
    return {role: float(cost) for role, cost in rows}


# --------------------------------------------------------------------------- the cache's rows

CALL_COLUMNS = ("key", "model", "params", "messages", "sample", "response", "logprobs", "prompt_tokens",
                "completion_tokens", "cost", "latency_s", "error", "run_id", "created_at", "stage_key", "role",
                "item_id", "round", "finish_reason", "provider_model", "system_fingerprint", "attempts",
                "attempt_log", "failure_kind")
_INSERT_CALL = (f"insert into llm_calls ({', '.join(CALL_COLUMNS)}) "
                f"values ({', '.join('?' * len(CALL_COLUMNS))})")
_CHUNK = 500


def encode_logprobs(logprobs: list[TokenLogprob] | None) -> str | None:
    """``llm_calls.logprobs`` for ``logprobs``: ``[[token, logprob, top], ...]``."""
    if logprobs is None:
        return None
    return json.dumps([[t.token, t.logprob, t.top] for t in logprobs], ensure_ascii=False)


def decode_logprobs(text: str | None) -> list[TokenLogprob] | None:
    """The logprobs stored by :func:`encode_logprobs`."""
    if text is None:
        return None
    return [TokenLogprob(tok, lp, [tuple(x) for x in top]) for tok, lp, top in json.loads(text)]


@dataclass(frozen=True)
class Answer:
    """A stored call that has an answer (no error), as the cache serves it."""

    call_id: int
    key: str
    text: str | None
    logprobs: list[TokenLogprob] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    finish_reason: str | None
    provider_model: str | None
    system_fingerprint: str | None


def first_answers(store: Store, keys: Sequence[str]) -> dict[str, Answer]:
    """key -> the first stored answer (call without an error), for those of
    ``keys`` that have one."""
    found: dict[str, Answer] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = store.execute(
            f"select id, key, response, logprobs, prompt_tokens, completion_tokens, cost, finish_reason, "
            f"provider_model, system_fingerprint "
            f"from llm_calls where error is null and key in ({marks}) order by id",
            chunk,
        ).fetchall()
        for call_id, key, response, logprobs, pt, ct, cost, finish, provider_model, fingerprint in rows:
            if key not in found:
                found[key] = Answer(call_id, key, response, decode_logprobs(logprobs), pt, ct, cost, finish,
                                    provider_model, fingerprint)
    return found


def record_call(store: Store, row: dict[str, Any], release: str | None = None) -> int:
    """Store one call (``row`` has every column of :data:`CALL_COLUMNS`,
    already encoded) in the caller's :meth:`~tapir.store.db.Store.transaction`,
    or in its own commit, so a crash loses nothing already paid for; with
    ``release``, this process's lock of that name is let go in the same
    commit. Returns the call's id."""
    with store.transaction() as conn:
        cursor = conn.execute(_INSERT_CALL, [row[c] for c in CALL_COLUMNS])
        if release is not None:
            drop_in_transaction(conn, release)
    return cursor.lastrowid


# --------------------------------------------------------------------------- the call log (``tapir logs``)

LOG_COLUMNS = ("id", "created_at", "model", "role", "stage_key", "round", "item_id", "sample", "params", "messages",
               "response", "error", "finish_reason", "prompt_tokens", "completion_tokens", "cost", "latency_s",
               "run_id", "key")
# Columns m007_call_attempts added (a database from before it, opened read-only, lacks them).
_ATTEMPT_COLUMNS = ("attempts", "attempt_log", "failure_kind")


@dataclass(frozen=True)
class CallFilter:
    """Which logged calls to read; every field given must match."""

    run_id: str | None = None  # calls of the run's stages' keys, and calls the run made outside any stage
    stage_keys: tuple[str, ...] = ()  # calls of these stage keys
    stage_key_prefix: str | None = None  # calls whose stage key starts with this
    role: str | None = None
    model: str | None = None
    ok: bool | None = None  # True: calls without an error; False: calls with one
    item_id: str | None = None
    round: int | None = None


def _distinct(store: Store, column: str) -> list[str]:
    return [str(r[0]) for r in store.execute(f"select distinct {column} from llm_calls order by {column}")
            if r[0] is not None]


def logged_roles(store: Store) -> list[str]:
    """Every role a logged call was made for, sorted."""
    return _distinct(store, "role")


def logged_models(store: Store) -> list[str]:
    """Every model a logged call was sent to, sorted."""
    return _distinct(store, "model")


def has_stage_key_prefix(store: Store, prefix: str) -> bool:
    """Is there a logged call whose stage key starts with ``prefix``?"""
    return store.execute("select 1 from llm_calls where stage_key like ? limit 1", [prefix + "%"]).fetchone() is not None


def _decoded_json(text: str | None) -> Any:
    """``params``/``messages`` as stored (JSON); text that is not JSON as it is."""
    if not text:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def logged_calls(store: Store, where: CallFilter, count: int = 0) -> list[dict[str, Any]]:
    """The newest ``count`` logged calls (0: all) that ``where`` selects,
    newest first, as dicts of :data:`LOG_COLUMNS` and the attempt columns
    (None where the database has none), ``params`` and ``messages`` decoded."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.run_id is not None:
        clauses.append("(stage_key in (select key from stages where run_id = ?) or run_id = ?)")
        params += [where.run_id, where.run_id]
    if where.stage_keys:
        clauses.append(f"stage_key in ({','.join('?' * len(where.stage_keys))})")
        params += list(where.stage_keys)
    if where.stage_key_prefix is not None:
        clauses.append("stage_key like ?")
        params.append(where.stage_key_prefix + "%")
    for column, value in (("role", where.role), ("model", where.model), ("item_id", where.item_id),
                          ("round", where.round)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.ok is not None:
        clauses.append("error is null" if where.ok else "error is not null")
    have = set(store["llm_calls"].columns_dict)
    columns = LOG_COLUMNS + tuple(c for c in _ATTEMPT_COLUMNS if c in have)
    sql = f"select {', '.join(columns)} from llm_calls"
    if clauses:
        sql += " where " + " and ".join(clauses)
    sql += " order by id desc"
    if count:
        sql += f" limit {int(count)}"
    rows = [{"attempts": None, "attempt_log": None, **dict(zip(columns, r))}
            for r in store.execute(sql, params).fetchall()]
    for r in rows:
        r["params"] = _decoded_json(r["params"])
        r["messages"] = _decoded_json(r["messages"])
    return rows
