"""Reading and writing a benchmark run's own rows: items, responses and
judgments, keyed so that a re-run finds what it already has.

Both benchmark runners (MT-Bench and AlpacaEval) use these helpers; every
write is an insert-or-ignore (items, responses) or an upsert (judgments) on
the unique indexes of :mod:`tapir.store.migrations`, so no duplicate rows
appear whatever is re-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from tapir.roles import Judgment
from tapir.store.db import Store, utcnow
from tapir.store.items import add_items, cached_uids
from tapir.store.judgments import decode_raw, encode_raw

ORIGIN = "benchmark"


@dataclass
class StoredJudgment:
    """One row of ``judgments`` as the runners need it back."""

    item_id: str
    position: str
    round: int
    score_a: float | None
    score_b: float | None
    preference: float | None
    raw: list[str]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def save_items(store: Store, run_id: str, items: Iterable[dict[str, Any]]) -> None:
    """Insert the benchmark's items (``id``, ``instruction``, ``output``,
    ``task_type``, ``meta``) under ``run_id``; existing ones are kept."""
    rows = [{**item, "origin": ORIGIN, "round": 0} for item in items]
    with store.transaction():
        add_items(store, run_id, rows)


def load_responses(store: Store, run_id: str, role: str, model: str) -> dict[tuple[str, int], tuple[int, str]]:
    """``{(item_id, round): (response id, text)}`` for one role and model."""
    rows = store.execute(
        "select id, item_id, round, text from responses where scope = ? and role = ? and model = ? and sample = 0",
        [run_id, role, model],
    ).fetchall()
    return {(item_id, rnd): (rid, text) for rid, item_id, rnd, text in rows}


def save_responses(
    store: Store, run_id: str, role: str, model: str, rows: Iterable[tuple[str, int, str, int | None]]
) -> None:
    """Insert responses ``(item_id, round, text, llm_call_id)``; an existing
    (run, item, role, model, round, sample 0) row is kept as it is."""
    now = utcnow()
    rows = list(rows)
    if rows:
        with store.transaction() as conn:
            uids = cached_uids(store, run_id, [row[0] for row in rows])
            # (a prepared statement, not table.insert_all: that one commits on its own, inside a caller's transaction)
            conn.executemany(
                "insert or ignore into responses (scope, item_id, role, model, round, sample, text, llm_call_id, "
                "created_at, item_uid) values (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                [(run_id, item_id, role, model, rnd, text, call_id, now, uids.get(item_id))
                 for item_id, rnd, text, call_id in rows])


def load_judgments(store: Store, run_id: str, judge: str) -> dict[tuple[str, str, int], StoredJudgment]:
    """``{(item_id, position, round): StoredJudgment}`` for one judge."""
    rows = store.execute(
        "select item_id, position, round, score_a, score_b, preference, raw, error from judgments "
        "where scope = ? and judge = ?",
        [run_id, judge],
    ).fetchall()
    out = {}
    for item_id, position, rnd, sa, sb, pref, raw, error in rows:
        out[(item_id, position, rnd)] = StoredJudgment(
            item_id, position, rnd, sa, sb, pref, decode_raw(raw), error
        )
    return out


_UPSERT = (
    "insert into judgments (scope, item_id, judge, model, kind, position, round, response_a_id, response_b_id, "
    "score_a, score_b, preference, raw, error, created_at, item_uid) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?) "
    "on conflict (scope, item_id, judge, position, round) do update set model = excluded.model, "
    "kind = excluded.kind, response_a_id = excluded.response_a_id, response_b_id = excluded.response_b_id, "
    "score_a = excluded.score_a, score_b = excluded.score_b, preference = excluded.preference, "
    "raw = excluded.raw, error = excluded.error, created_at = excluded.created_at, item_uid = excluded.item_uid"
)


@dataclass
class JudgmentRow:
    """A judgment to write, with where it belongs."""

    item_id: str
    position: str
    round: int
    judgment: Judgment
    response_a_id: int | None = None
    response_b_id: int | None = None


def save_judgments(store: Store, run_id: str, judge: str, judge_model: str, kind: str,
                   rows: Iterable[JudgmentRow]) -> None:
    """Upsert judgments on (run, item, judge, position, round)."""
    now = utcnow()
    params = [
        (
            run_id, r.item_id, judge, judge_model, kind, r.position, r.round, r.response_a_id, r.response_b_id,
            r.judgment.score_a, r.judgment.score_b, r.judgment.preference,
            encode_raw(r.judgment.raw), r.judgment.error, now,
        )
        for r in rows
    ]
    if params:
        with store.transaction():
            uids = cached_uids(store, run_id, [p[1] for p in params])
            store.db.conn.executemany(_UPSERT, [(*p, uids.get(p[1])) for p in params])


def forget_responses(store: Store, scope: str, role: str) -> int:
    """Delete the ``role`` answers under ``scope`` (a forced re-run
    regenerates them); returns how many."""
    with store.transaction():
        return store.db.conn.execute("delete from responses where scope = ? and role = ?", [scope, role]).rowcount


def responses_of_role(store: Store, scope: str, role: str) -> list[tuple[int, str, int, str]]:
    """(response id, item_id, round, text) of the sample-0 ``role`` answers
    under ``scope``, in the order they were written."""
    return store.execute("select id, item_id, round, text from responses where scope = ? and role = ? "
                         "and sample = 0 order by id", [scope, role]).fetchall()


def answers_elsewhere(store: Store, role: str, model: str, not_scope: str,
                      item_ids: list[str]) -> list[tuple[str, str, int | None]]:
    """(item_id, text, llm_call_id) of round-0, sample-0 ``role`` answers by
    ``model`` to ``item_ids`` stored under any scope but ``not_scope``,
    oldest first."""
    marks = ",".join("?" * len(item_ids))
    return store.execute(
        f"select item_id, text, llm_call_id from responses where role = ? and model = ? and round = 0 "
        f"and sample = 0 and scope != ? and item_id in ({marks}) order by id",
        [role, model, not_scope, *item_ids]).fetchall()
