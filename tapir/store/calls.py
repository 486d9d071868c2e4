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
    already encoded) in its own commit, so a crash loses nothing already
    paid for; with ``release``, this process's lock of that name is let go
    in the same commit. Returns the call's id."""
    conn = store.db.conn
    with conn:
        cursor = conn.execute(_INSERT_CALL, [row[c] for c in CALL_COLUMNS])
        if release is not None:
            drop_in_transaction(conn, release)
    return cursor.lastrowid
