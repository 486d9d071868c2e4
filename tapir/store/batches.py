"""The ``api_batches`` and ``api_batch_requests`` tables: provider batch
jobs tapir submitted and which requests (by cache key) each carries, so a
re-run polls and collects a batch instead of submitting it again
(``tapir_litellm.batch`` writes and reads them through these functions)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tapir.store.db import Store

_CHUNK = 500
# The columns a batch's life changes (id, model, n_requests and created_at are set once).
UPDATABLE = frozenset({"provider_batch_id", "input_file_id", "output_file_id", "error_file_id", "status", "error",
                       "updated_at"})


def add_batch(store: Store, batch_id: str, model: str, keys: Sequence[str], now: str) -> None:
    """Record batch ``batch_id`` of ``model`` (status ``submitting``) and the
    requests it carries, in one commit."""
    with store.transaction() as conn:
        conn.execute("insert into api_batches (id, model, status, n_requests, created_at, updated_at) "
                     "values (?, ?, 'submitting', ?, ?, ?)", [batch_id, model, len(keys), now, now])
        conn.executemany("insert into api_batch_requests (batch_id, request_key) values (?, ?)",
                         [(batch_id, k) for k in keys])


def update_batch(store: Store, batch_id: str, fields: Mapping[str, Any]) -> None:
    """Set ``fields`` (columns of :data:`UPDATABLE`) of batch ``batch_id``, in one commit."""
    unknown = sorted(set(fields) - UPDATABLE)
    if unknown:
        raise ValueError(f"api_batches has no updatable column {', '.join(unknown)} "
                         f"(one of {', '.join(sorted(UPDATABLE))})")
    sets = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as conn:
        conn.execute(f"update api_batches set {sets} where id = ?", [*fields.values(), batch_id])


def batch_row(store: Store, batch_id: str) -> dict[str, Any]:
    """The ``api_batches`` row of ``batch_id`` as a dict (every column)."""
    cur = store.db.conn.execute("select * from api_batches where id = ?", [batch_id])
    return dict(zip([d[0] for d in cur.description], cur.fetchone()))


def batch_request_keys(store: Store, batch_id: str) -> list[str]:
    """The cache keys of the requests batch ``batch_id`` carries."""
    return [r[0] for r in store.db.conn.execute("select request_key from api_batch_requests where batch_id = ?",
                                                [batch_id])]


def live_batches_of(store: Store, model: str, live: Sequence[str], keys: Sequence[str]) -> dict[str, str]:
    """cache key -> batch id, for those of ``keys`` in a batch of ``model``
    whose status is one of ``live`` (the oldest such batch per key)."""
    found: dict[str, str] = {}
    marks_live = ",".join("?" * len(live))
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start:start + _CHUNK])
        rows = store.db.conn.execute(
            f"select r.request_key, b.id from api_batch_requests r join api_batches b on b.id = r.batch_id "
            f"where b.model = ? and b.status in ({marks_live}) and r.request_key in ({','.join('?' * len(chunk))}) "
            f"order by b.created_at", [model, *live, *chunk]).fetchall()
        for key, batch_id in rows:
            found.setdefault(key, batch_id)
    return found


def provider_batch_ids(store: Store) -> set[str]:
    """Every provider batch id tapir has stored."""
    return {r[0] for r in store.db.conn.execute(
        "select provider_batch_id from api_batches where provider_batch_id is not null")}
