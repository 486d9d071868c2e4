"""``batch: true`` for ``anthropic/<model>``: Anthropic's Message Batches API,
against a local stand-in (tests/support/tapir_testing/anthropic_batch_server.py)."""

from __future__ import annotations

import math
import threading

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402
from tapir_litellm.batch_anthropic import output_line, params_of  # noqa: E402
from tapir_testing.anthropic_batch_server import AnthropicBatchServer, errored  # noqa: E402

KEY = "sk-ant-test-secret"


def reqs(n: int, **params) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
                              GenerationParams(max_new_tokens=8, **params)) for i in range(n)]


def backend(srv, store, **options) -> LiteLLMBackend:
    be = LiteLLMBackend("anthropic/claude-test", LiteLLMBackend.Options(
        api_base=srv.base_url, batch=True, batch_poll_seconds=0.05, **options))
    be.attach_store(store)
    return be


def batches(store) -> list[tuple]:
    return store.execute("select provider_batch_id, status, n_requests from api_batches order by created_at").fetchall()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def test_message_batch_round_trip_then_cached(store):
    with AnthropicBatchServer(latency=0.05) as srv:
        out = CachedBackend(backend(srv, store), store).generate(reqs(3, temperature=0.7, stop=("END",)))
        again = CachedBackend(backend(srv, store), store).generate(reqs(3, temperature=0.7, stop=("END",)))
        sent = srv.batches["msgbatch_000001"]["_requests"]
    assert [c.text for c in out] == ["echo: q0", "echo: q1", "echo: q2"] and all(c.ok for c in out)
    assert (out[0].prompt_tokens, out[0].completion_tokens, out[0].finish_reason) == (4, 2, "stop")
    assert all(c.cached for c in again) and srv.created == 1
    assert batches(store) == [("msgbatch_000001", "collected", 3)]
    params = sent[0]["params"]
    assert params["system"] == "Be brief." and params["messages"] == [{"role": "user", "content": "q0"}]
    assert (params["model"], params["max_tokens"], params["temperature"]) == ("claude-test", 8, 0.7)
    assert params["stop_sequences"] == ["END"] and "seed" not in params and "stop" not in params
    assert len(sent[0]["custom_id"]) == 64
    assert srv.keys == {KEY}
    stored = store.execute("select * from api_batches").fetchall()
    assert KEY not in repr(stored)


def test_errored_lines_are_errors_and_only_they_are_submitted_again(store):
    broken = {"on": True}

    def reply(params):
        text = params["messages"][-1]["content"]
        return errored("prompt is too long") if text == "q1" and broken["on"] else f"ok {text}"

    with AnthropicBatchServer(reply=reply) as srv:
        first = CachedBackend(backend(srv, store), store).generate(reqs(3))
        broken["on"] = False
        second = CachedBackend(backend(srv, store), store).generate(reqs(3))
    assert [c.ok for c in first] == [True, False, True]
    assert "BatchLineFailed (HTTP 400)" in first[1].error and "prompt is too long" in first[1].error
    assert [c.text for c in second] == ["ok q0", "ok q1", "ok q2"] and [c.cached for c in second] == [True, False, True]
    assert [n for _, _, n in batches(store)] == [3, 1] and srv.lines == 4


def test_pending_at_the_deadline_then_collected_not_resubmitted(store):
    hold = threading.Event()
    with AnthropicBatchServer(hold=hold) as srv:
        first = CachedBackend(backend(srv, store, batch_max_wait_seconds=0.3), store).generate(reqs(2))
        assert all("BatchPending" in c.error and "msgbatch_000001 is in_progress" in c.error for c in first)
        hold.set()
        second = CachedBackend(backend(srv, store), store).generate(reqs(2))
    assert all(c.ok for c in second) and srv.created == 1
    assert batches(store) == [("msgbatch_000001", "collected", 2)]


def test_killed_after_create_before_the_id_was_stored_is_adopted(store, monkeypatch):
    from tapir_litellm import batch as batch_mod

    with AnthropicBatchServer() as srv:
        real_update = batch_mod.BatchRunner._update

        def die_before_storing_the_id(self, batch_id, **fields):
            if "provider_batch_id" in fields:
                raise KeyboardInterrupt  # as if killed right after the create answered
            real_update(self, batch_id, **fields)

        monkeypatch.setattr(batch_mod.BatchRunner, "_update", die_before_storing_the_id)
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(backend(srv, store), store).generate(reqs(3))
        monkeypatch.setattr(batch_mod.BatchRunner, "_update", real_update)
        assert batches(store) == [(None, "submitting", 3)]
        out = CachedBackend(backend(srv, store), store).generate(reqs(3))
    assert all(c.ok for c in out)
    assert srv.created == 1  # found in the batch list (size, time), not created again
    assert batches(store) == [("msgbatch_000001", "collected", 3)]


def test_a_batch_of_another_row_is_not_adopted(store, monkeypatch):
    """Killed before the create: the list holds only an earlier batch of the same size, already ours."""
    from tapir_litellm import batch as batch_mod

    with AnthropicBatchServer() as srv:
        CachedBackend(backend(srv, store), store).generate(reqs(2))  # msgbatch_000001, collected
        real_submit = batch_mod.BatchRunner._upload_and_create

        def die_before_the_create(self, batch_id, keys, by_key):
            self._update(batch_id, input_file_id="inline")
            raise KeyboardInterrupt

        monkeypatch.setattr(batch_mod.BatchRunner, "_upload_and_create", die_before_the_create)
        other = [GenerationRequest([{"role": "user", "content": f"z{i}"}], GenerationParams(max_new_tokens=8))
                 for i in range(2)]
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(backend(srv, store), store).generate(other)
        monkeypatch.setattr(batch_mod.BatchRunner, "_upload_and_create", real_submit)
        out = CachedBackend(backend(srv, store), store).generate(other)
    assert [c.text for c in out] == ["echo: z0", "echo: z1"]
    assert srv.created == 2
    assert [b for b, _, _ in batches(store)] == ["msgbatch_000001", "msgbatch_000002"]


def test_params_and_result_lines_convert_both_ways():
    body = {"model": "claude-x", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
            "max_tokens": 5, "temperature": 0.0, "seed": 3, "logprobs": True, "top_logprobs": 2, "top_k": 4}
    assert params_of(body) == {"model": "claude-x", "max_tokens": 5, "temperature": 0.0, "top_k": 4, "system": "S",
                               "messages": [{"role": "user", "content": "U"}]}
    ok = output_line({"custom_id": "k", "result": {"type": "succeeded", "message": {
        "id": "m", "model": "claude-x", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "stop_reason": "max_tokens", "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 2}}}})
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "ab"},
                                                    "finish_reason": "length"}
    assert ok["response"]["body"]["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    overloaded = output_line({"custom_id": "k", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "overloaded_error", "message": "busy"}}}})
    assert overloaded["response"]["status_code"] == 500 and overloaded["error"]["message"] == "overloaded_error: busy"
    expired = output_line({"custom_id": "k", "result": {"type": "expired"}})
    assert "expired" in expired["error"]["message"] and "re-run" in expired["error"]["message"]


def test_batch_price_is_half_of_the_anthropic_price(store):
    import litellm

    from tapir_litellm.batch import batch_cost

    litellm.register_model({"claude-tapir-priced": {
        "input_cost_per_token": 3e-6, "output_cost_per_token": 15e-6, "litellm_provider": "anthropic",
        "mode": "chat"}})
    assert math.isclose(batch_cost("anthropic/claude-tapir-priced", 10, 4), 0.5 * (30e-6 + 60e-6))
