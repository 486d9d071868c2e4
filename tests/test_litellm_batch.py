"""``batch: true``: requests through an OpenAI-style batch API (files +
batches) on the local server; batch ids in the database; a re-run (also
after kill -9 between submit and collect) collects instead of resubmitting."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.errors import TapirError  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import BATCH_PRICE_FACTOR, LiteLLMBackend  # noqa: E402
from tapir_testing.openai_server import OpenAIServer, fault  # noqa: E402


def reqs(n: int, prefix: str = "q") -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"{prefix}{i}"}], GenerationParams(max_new_tokens=8))
            for i in range(n)]


def batch_backend(srv, store, **options) -> LiteLLMBackend:
    be = LiteLLMBackend("openai/test-model", LiteLLMBackend.Options(
        api_base=srv.base_url, batch=True, batch_poll_seconds=0.05, **options))
    be.attach_store(store)
    return be


def batches(store) -> list[tuple]:
    return store.execute("select provider_batch_id, status, n_requests from api_batches order by created_at").fetchall()


def test_batch_round_trip_and_cached_rerun(store):
    with OpenAIServer(batch_latency=0.1) as srv:
        out = CachedBackend(batch_backend(srv, store), store).generate(reqs(6))
        stats = srv.stats()
        again = CachedBackend(batch_backend(srv, store), store).generate(reqs(6))
        stats_again = srv.stats()
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(6)] and all(c.ok for c in out)
    assert stats["requests"] == 0  # no synchronous call
    assert stats["batch_counts"]["batches_created"] == 1 and stats["batch_counts"]["batch_lines"] == 6
    assert batches(store) == [("batch_000001", "collected", 6)]
    assert all(c.cached for c in again) and stats_again["batch_counts"] == stats["batch_counts"]
    rows = store.execute("select count(*), count(error) from llm_calls").fetchone()
    assert rows == (6, 0)
    [line] = srv._files["file-000001"]["data"].decode().splitlines()[:1]
    assert json.loads(line)["body"]["model"] == "test-model" and json.loads(line)["url"] == "/v1/chat/completions"


def test_failed_lines_are_errors_and_only_they_are_resubmitted(store):
    broken = {"on": True}

    def reply(messages, body):
        text = messages[-1]["content"]
        return fault("500") if text == "q2" and broken["on"] else f"ok {text}"

    with OpenAIServer(reply=reply) as srv:
        first = CachedBackend(batch_backend(srv, store), store).generate(reqs(4))
        broken["on"] = False
        second = CachedBackend(batch_backend(srv, store), store).generate(reqs(4))
        counts = srv.stats()["batch_counts"]
    assert [c.ok for c in first] == [True, True, False, True] and "BatchLineFailed" in first[2].error
    assert all(c.ok for c in second) and second[2].text == "ok q2"
    assert [c.cached for c in second] == [True, True, False, True]
    assert counts["batches_created"] == 2 and counts["batch_lines"] == 5  # 4, then only the failed one
    assert [n for _, _, n in batches(store)] == [4, 1]


def test_pending_at_the_deadline_then_collected_by_the_rerun(store):
    hold = threading.Event()
    with OpenAIServer(batch_hold=hold) as srv:
        first = CachedBackend(batch_backend(srv, store, batch_max_wait_seconds=0.3), store).generate(reqs(3))
        assert all(not c.ok and "BatchPending" in c.error and "re-run to collect" in c.error for c in first)
        hold.set()
        second = CachedBackend(batch_backend(srv, store), store).generate(reqs(3))
        counts = srv.stats()["batch_counts"]
    assert all(c.ok for c in second)
    assert counts["batches_created"] == 1  # collected, never resubmitted


CHILD = textwrap.dedent("""
    import sys
    from tapir.cache import CachedBackend
    from tapir.roles import GenerationParams, GenerationRequest
    from tapir.store import open_store
    from tapir_litellm.backend import LiteLLMBackend

    store = open_store(sys.argv[1])
    be = LiteLLMBackend("openai/test-model", LiteLLMBackend.Options(api_base=sys.argv[2], batch=True,
                                                                    batch_poll_seconds=0.05))
    be.attach_store(store)
    requests = [GenerationRequest([{"role": "user", "content": f"q{i}"}], GenerationParams(max_new_tokens=8))
                for i in range(int(sys.argv[3]))]
    CachedBackend(be, store).generate(requests)
    print("collected")  # never reached: the test kills this process first
""")


def test_kill_9_between_submit_and_collect_then_rerun_collects(store, tmp_path):
    hold = threading.Event()
    n = 8
    with OpenAIServer(batch_hold=hold) as srv:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        child = subprocess.Popen([sys.executable, str(script), store.path, srv.base_url, str(n)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            submitted = None
            while time.monotonic() < deadline and child.poll() is None:
                with sqlite3.connect(store.path) as db:
                    submitted = db.execute("select provider_batch_id, status from api_batches").fetchall()
                if submitted and submitted[0][0]:
                    break
                time.sleep(0.05)
            assert submitted and submitted[0][0] == "batch_000001", (submitted, child.poll())
            os.kill(child.pid, signal.SIGKILL)  # submitted, polling, nothing collected
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        assert store.execute("select count(*) from llm_calls").fetchone() == (0,)
        hold.set()
        out = CachedBackend(batch_backend(srv, store), store).generate(reqs(n))
        counts = srv.stats()["batch_counts"]
        requests = srv.requests
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(n)]
    assert counts["batches_created"] == 1 and counts["batch_lines"] == n  # collected, not resubmitted
    assert requests == 0
    assert batches(store) == [("batch_000001", "collected", n)]
    assert store.execute("select count(*), count(error) from llm_calls").fetchone() == (n, 0)


def test_killed_after_create_before_the_id_was_stored_is_adopted(store, monkeypatch):
    from tapir_litellm import batch as batch_mod

    with OpenAIServer(batch_latency=0.05) as srv:
        be = batch_backend(srv, store)
        real_update = batch_mod.BatchRunner._update

        def die_before_storing_the_id(self, batch_id, **fields):
            if "provider_batch_id" in fields:
                raise KeyboardInterrupt  # as if killed right after batches.create
            real_update(self, batch_id, **fields)

        monkeypatch.setattr(batch_mod.BatchRunner, "_update", die_before_storing_the_id)
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(be, store).generate(reqs(3))
        monkeypatch.setattr(batch_mod.BatchRunner, "_update", real_update)
        assert batches(store) == [(None, "submitting", 3)]
        out = CachedBackend(batch_backend(srv, store), store).generate(reqs(3))
        counts = srv.stats()["batch_counts"]
    assert all(c.ok for c in out)
    assert counts["batches_created"] == 1  # found by its metadata, not created again
    assert batches(store) == [("batch_000001", "collected", 3)]


def test_batch_price_is_half_and_shown_by_the_backend(store):
    import litellm

    from tapir_litellm.batch import batch_cost

    litellm.register_model({"openai/tapir-batch-priced": {
        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "litellm_provider": "openai", "mode": "chat"}})
    assert BATCH_PRICE_FACTOR == 0.5
    assert math.isclose(batch_cost("openai/tapir-batch-priced", 10, 5), 0.5 * (10e-6 + 10e-6))
    assert batch_cost("openai/unpriced-local-model", 10, 5) is None
    sync = LiteLLMBackend("openai/m", LiteLLMBackend.Options(api_base="http://127.0.0.1:9/v1"))
    batched = LiteLLMBackend("openai/m", LiteLLMBackend.Options(api_base="http://127.0.0.1:9/v1", batch=True))
    assert (sync.price_factor, batched.price_factor) == (1.0, 0.5)
    with OpenAIServer(reply=lambda m, b: "a b c") as srv:
        be = LiteLLMBackend("openai/tapir-batch-priced", LiteLLMBackend.Options(
            api_base=srv.base_url, batch=True, batch_poll_seconds=0.05))
        be.attach_store(store)
        [c] = be.generate([GenerationRequest([{"role": "user", "content": "x y"}])])
    assert (c.prompt_tokens, c.completion_tokens) == (5, 3)
    assert math.isclose(c.cost, 0.5 * (5e-6 + 6e-6))


def test_batch_needs_a_provider_with_a_batch_api_and_a_store():
    problems = LiteLLMBackend.preflight("ollama/llama3", {"batch": True})
    assert any("batch: true is not supported for provider 'ollama'" in p for p in problems)
    with pytest.raises(TapirError, match="attach_store"):
        LiteLLMBackend("openai/m", LiteLLMBackend.Options(api_base="http://127.0.0.1:9/v1", batch=True)).generate(
            reqs(1))
