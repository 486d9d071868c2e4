"""One commit per LLM call: the store's nesting transaction, and the cache
recording a call and delivering it to the stage inside one transaction."""

from __future__ import annotations

import sqlite3

import pytest

from fakes import ScriptedBackend
from tapir.cache import CachedBackend
from tapir.roles import Completion, GenerationParams, GenerationRequest
from tapir.store import locks
from tapir.store.responses import add_response


def _other(store) -> sqlite3.Connection:
    """A second connection: what another process would see (committed rows only)."""
    return sqlite3.connect(str(store.path))


def _count(conn, table: str) -> int:
    return conn.execute(f"select count(*) from {table}").fetchone()[0]


def _commits(store) -> list[str]:
    log: list[str] = []
    store.db.conn.set_trace_callback(lambda sql: log.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return log


def saving(store, seen: list, probe):
    """A stage's on_result: notes ``probe()`` (what another connection sees
    then), then saves the answer as a response, as save_response does."""

    def on_result(i, completion):
        seen.append(probe())
        with store.transaction():
            add_response(store, "stage-k", f"q{i}", "teacher", "m", 0, completion.text, completion.call_id)

    return on_result


def req(content: str) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": content}], GenerationParams(), meta={"item_id": content})


def test_nested_scopes_commit_once_at_the_outermost(store):
    other = _other(store)
    with store.transaction() as conn:
        conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'a', 'x', 0, 1)")
        with store.transaction():
            conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'b', 'x', 0, 2)")
        assert store.in_transaction
        assert _count(other, "scores") == 0  # the inner scope did not commit
    assert not store.in_transaction
    assert _count(other, "scores") == 2


def test_an_exception_rolls_back_every_scope(store):
    other = _other(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'a', 'x', 0, 1)")
            with store.transaction():
                conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'b', 'x', 0, 2)")
                raise RuntimeError("boom")
    assert _count(other, "scores") == _count(store.db.conn, "scores") == 0
    assert not store.in_transaction and not store.db.conn.in_transaction
    with store.transaction() as conn:  # usable again
        conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'c', 'x', 0, 3)")
    assert _count(other, "scores") == 1


def test_a_call_its_response_and_its_claims_release_commit_together(store):
    """Per call one commit: the llm_calls row, the claim's release and what
    on_result writes (a response, as a stage's save_response does). While
    on_result runs, another connection sees none of them yet."""
    other = _other(store)
    seen_inside: list = []
    on_result = saving(store, seen_inside, lambda: (_count(other, "llm_calls"), _count(other, "responses")))
    commits = _commits(store)
    cached = CachedBackend(ScriptedBackend(lambda m: "answer " + m[-1]["content"], model_id="m"), store)
    out = cached.generate([req(f"q{i}") for i in range(5)], on_result=on_result)
    store.db.conn.set_trace_callback(None)
    assert [c.text for c in out] == [f"answer q{i}" for i in range(5)]
    assert seen_inside == [(i, i) for i in range(5)]  # each call's rows appear together, after on_result
    calls = len(commits) - 2  # the claim of the batch and the final release of its (already released) claims
    assert calls == 5, commits
    linked = other.execute("select r.item_id, c.response from responses r join llm_calls c on c.id = r.llm_call_id "
                           "order by r.id").fetchall()
    assert linked == [(f"q{i}", f"answer q{i}") for i in range(5)]
    assert locks.live_of(store.db.conn, [f"call:{k}" for k in
                                         (r[0] for r in other.execute("select key from llm_calls"))]) == set()


def test_a_stage_that_raises_in_on_result_keeps_the_paid_call(store):
    """on_result raising (the circuit breaker, Ctrl-C) does not roll back
    the call it was given: the answer is paid for, stored and served next
    time, its claim released; what the stage wrote before raising is kept
    too (as when each write committed on its own)."""
    other = _other(store)

    def on_result(i, completion):
        with store.transaction():
            add_response(store, "stage-k", "q", "teacher", "m", 0, completion.text, completion.call_id)
        raise KeyboardInterrupt

    backend = ScriptedBackend(lambda m: "paid", model_id="m")
    with pytest.raises(KeyboardInterrupt):
        CachedBackend(backend, store).generate([req("q")], on_result=on_result)
    assert not store.db.conn.in_transaction
    assert other.execute("select response from llm_calls").fetchall() == [("paid",)]
    assert _count(other, "responses") == 1
    assert _count(other, "locks") == 0
    (again,) = CachedBackend(backend, store).generate([req("q")])
    assert again.cached and again.text == "paid" and len(backend.requests) == 1


def test_a_failed_record_writes_nothing_of_that_call(store, monkeypatch):
    """An error while storing the call (here: the insert fails) rolls back
    what that call's transaction held: no half-written call."""
    from tapir.store import calls

    def broken(store_, row, release=None):
        with store_.transaction() as conn:
            conn.execute("insert into scores (scope, item_id, name, round, value) values ('s', 'a', 'x', 0, 1)")
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(calls, "record_call", broken)
    with pytest.raises(sqlite3.OperationalError):
        CachedBackend(ScriptedBackend(lambda m: "x", model_id="m"), store).generate([req("q")])
    assert _count(_other(store), "scores") == 0 and not store.db.conn.in_transaction


class BurstBackend(ScriptedBackend):
    """Delivers its answers in bursts of ``burst`` through tapir.roles.deliver,
    as the API backend hands over the answers it has in hand at once."""

    def __init__(self, reply, burst: int, model_id: str = "m"):
        super().__init__(reply, model_id=model_id)
        self.burst = burst

    def generate(self, requests, on_result=None):
        from tapir.roles import deliver

        out = [Completion(text=self.reply(r.messages)) for r in requests]
        self.requests.extend(requests)
        for start in range(0, len(out), self.burst):
            deliver(on_result, [(i, out[i]) for i in range(start, min(start + self.burst, len(out)))])
        return out


def test_a_burst_of_calls_commits_once(store):
    """The answers a backend has in hand together (tapir.roles.deliver) are
    recorded and handed to the stage in one transaction: 10 calls in bursts
    of 4 make 3 commits, not 10, and every call's rows are there."""
    other = _other(store)
    seen_inside: list = []
    on_result = saving(store, seen_inside, lambda: (_count(other, "llm_calls"), _count(other, "locks")))
    commits = _commits(store)
    out = CachedBackend(BurstBackend(lambda m: "answer " + m[-1]["content"], burst=4), store).generate(
        [req(f"q{i}") for i in range(10)], on_result=on_result)
    store.db.conn.set_trace_callback(None)
    assert [c.text for c in out] == [f"answer q{i}" for i in range(10)]
    assert len(commits) - 2 == 3, commits  # less the batch's claim and the final release
    # A burst becomes visible whole, after it: its rows and its claims' release.
    assert seen_inside == [(0, 10)] * 4 + [(4, 6)] * 4 + [(8, 2)] * 2
    assert _count(other, "llm_calls") == _count(other, "responses") == 10
    assert _count(other, "locks") == 0


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_stage_raising_mid_burst_keeps_the_bursts_paid_calls(store, error):
    """The stage raising on the third answer of a burst of four: every answer
    of the burst is paid for, so all four are stored (the fourth no longer
    handed to the stage) and served next time; the stage's exception comes
    out once the burst is stored."""
    other = _other(store)
    handed: list[int] = []

    def on_result(i, completion):
        handed.append(i)
        if i == 2:
            raise error("stage broke")

    backend = BurstBackend(lambda m: "paid " + m[-1]["content"], burst=4)
    with pytest.raises(error, match="stage broke"):
        CachedBackend(backend, store).generate([req(f"q{i}") for i in range(4)], on_result=on_result)
    assert handed == [0, 1, 2]
    assert not store.db.conn.in_transaction and _count(other, "locks") == 0
    assert sorted(r[0] for r in other.execute("select response from llm_calls")) == [f"paid q{i}" for i in range(4)]
    again = CachedBackend(backend, store).generate([req(f"q{i}") for i in range(4)])
    assert all(c.cached for c in again) and len(backend.requests) == 4


def test_a_call_that_fails_to_be_stored_mid_burst_keeps_the_others(store, monkeypatch):
    """In a burst, a call whose row cannot be stored (the insert fails)
    leaves no row of itself, and the other calls of the burst, before and
    after it, commit; the failure reaches the caller and no claim is left behind."""
    from tapir.store import calls

    real = calls.record_call
    seen = []

    def flaky(store_, row, release=None):
        seen.append(row["key"])
        if len(seen) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(store_, row, release)

    monkeypatch.setattr(calls, "record_call", flaky)
    with pytest.raises(sqlite3.OperationalError):
        CachedBackend(BurstBackend(lambda m: "x " + m[-1]["content"], burst=3), store).generate(
            [req(f"q{i}") for i in range(3)])
    other = _other(store)
    assert [r[0] for r in other.execute("select response from llm_calls")] == ["x q0", "x q2"]
    assert _count(other, "locks") == 0 and not store.db.conn.in_transaction
