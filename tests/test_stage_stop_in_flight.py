"""A stage that raises while API requests are in flight (its circuit
breaker, a bug): the backend sends nothing more, waits for the requests it
had sent, and the cache records their answers (paid for) without handing
them to the stage again, so a re-run is served them instead of paying twice.
Ctrl-C does not wait.

Against the local OpenAI-compatible server, each answer taking 0.3 s.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from tapir_testing.openai_server import OpenAIServer

from tapir.cache import CachedBackend
from tapir.roles import GenerationRequest

CONCURRENCY = 4


def backend_for(url: str, **options):
    from tapir_litellm.backend import LiteLLMBackend

    opts = {"api_base": url, "concurrency": CONCURRENCY, "timeout": 5.0, "max_retries": 0,
            "adaptive_concurrency": False, **options}
    return LiteLLMBackend("openai/in-flight", LiteLLMBackend.Options(**opts))


def asks(n: int) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def recorded(store) -> list[str]:
    conn = sqlite3.connect(str(store.path))  # what another process sees: committed rows only
    return sorted(r[0] for r in conn.execute("select response from llm_calls where error is null"))


@pytest.mark.parametrize("transport", ["auto", "litellm"])  # auto: the direct aiohttp path
def test_answers_in_flight_when_the_stage_raises_are_recorded_not_handed_over(store, transport):
    handed: list[int] = []

    def on_result(i, completion):
        handed.append(i)
        raise RuntimeError("stage broke")

    with OpenAIServer(latency=0.3) as srv:
        backend = backend_for(srv.base_url, transport=transport)
        with pytest.raises(RuntimeError, match="stage broke"):
            CachedBackend(backend, store).generate(asks(20), on_result=on_result)
        sent = srv.requests
        # The stage saw one answer; the others it had sent arrived and were kept.
        assert len(handed) == 1
        assert CONCURRENCY <= sent < 20  # nothing new after the stage raised (a few may have left at once)
        kept = recorded(store)
        assert len(kept) == sent, (kept, sent)
        again = CachedBackend(backend, store).generate(asks(20))
        assert all(c.ok for c in again)
        assert sum(c.cached for c in again) == sent
        assert srv.requests == 20  # the re-run paid only for what had never been sent
    conn = sqlite3.connect(str(store.path))
    assert conn.execute("select count(*) from locks").fetchone()[0] == 0


def test_ctrl_c_does_not_wait_for_requests_in_flight(store):
    def on_result(i, completion):
        raise KeyboardInterrupt

    with OpenAIServer(latency=lambda index, body: 0.2 if index == 0 else 3.0) as srv:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(backend_for(srv.base_url), store).generate(asks(8), on_result=on_result)
        waited = time.monotonic() - started
    assert len(recorded(store)) == 1  # the answer the stage raised on
    assert waited < 2.5  # not the 3 s answers still in flight


def test_a_failure_to_record_the_answers_in_flight_does_not_hide_the_stages_error(store, monkeypatch, caplog):
    """The stage's exception is the one that comes out; a record that fails
    while the requests in flight are stored is said on the log."""
    from tapir.store import calls

    real, stored = calls.record_call, []

    def full_disk_after_the_first(store_, row, release=None):
        stored.append(row["key"])
        if len(stored) > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(store_, row, release)

    def on_result(i, completion):
        raise RuntimeError("stage broke")

    monkeypatch.setattr(calls, "record_call", full_disk_after_the_first)
    with OpenAIServer(latency=0.3) as srv, caplog.at_level("WARNING", logger="tapir_litellm.stop"):
        with pytest.raises(RuntimeError, match="stage broke"):
            CachedBackend(backend_for(srv.base_url), store).generate(asks(12), on_result=on_result)
    assert len(recorded(store)) == 1
    assert "could not be recorded (OperationalError: database or disk is full)" in caplog.text
