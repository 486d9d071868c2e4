"""The ``llm_calls`` table as the pipeline counts it (``tapir.cache``
writes the rows)."""

from __future__ import annotations

from tapir.store.db import Store


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
