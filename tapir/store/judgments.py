"""The ``judgments`` table: a judge's verdict on an item's answer(s).

One encoding per column: ``raw`` is always a JSON list of the judge's texts
(``[]`` when it read none); ``details`` a JSON object of what the judge
says about how it judged (read_by, order errors, spreads), or NULL."""

from __future__ import annotations

import json
from typing import Any, Sequence

from tapir.store.db import Store, dumps, utcnow
from tapir.store.items import cached_uid


def encode_raw(texts: Sequence[str]) -> str:
    """``judgments.raw``: the judge's texts as a JSON list."""
    return json.dumps([str(t) for t in texts], ensure_ascii=False)


def decode_raw(value: str | None) -> list[str]:
    """The judge's texts back from ``judgments.raw`` (``[]`` for NULL)."""
    return list(json.loads(value)) if value else []


def save_stage_judgment(store: Store, scope: str, item_id: str, judge: str, model: str | None, kind: str,
                        position: str, round: int, response_a_id: int | None, response_b_id: int | None,
                        score_a: float | None, score_b: float | None, preference: float | None,
                        raw: Sequence[str], details: dict[str, Any] | None, error: str | None,
                        read_by: str | None) -> None:
    """Write (or replace) the judgment of (scope, item, judge, position,
    round). The caller holds the transaction. Its ``item_uid`` is looked up
    here (:func:`tapir.store.items.cached_uid`)."""
    store.db.conn.execute(
        "insert or replace into judgments (scope, item_id, judge, model, kind, position, round, response_a_id, "
        "response_b_id, score_a, score_b, preference, raw, details, error, read_by, created_at, item_uid) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scope, item_id, judge, model, kind, position, round, response_a_id, response_b_id, score_a, score_b,
         preference, encode_raw(raw), dumps(details) if details else None, error, read_by, utcnow(),
         cached_uid(store, scope, item_id)])


def provenance_rows(store: Any, scope: str) -> list[tuple]:
    """(read_by, logprobs_missing, MFD spread) of the ok judgments under
    ``scope``, the last two from ``details`` (NULL where it is not JSON).
    ``store``: anything with ``execute(sql, params)``."""
    field = "case when json_valid(details) then json_extract(details, '$.{}') end"
    return store.execute(
        f"select read_by, {field.format('logprobs_missing')}, {field.format('spread.mfd')} "
        "from judgments where scope = ? and error is null", [scope]).fetchall()
