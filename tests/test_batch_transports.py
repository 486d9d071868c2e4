"""``batch: true`` through litellm's batch functions (``litellm_proxy/`` on the
local OpenAI stand-in: litellm's create_file / create_batch / retrieve_batch /
file_content / list_batches) and preflight's provider list."""

from __future__ import annotations

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402
from tapir_litellm.batch import BatchRunner, transport_name  # noqa: E402
from tapir_testing.openai_server import OpenAIServer, fault  # noqa: E402


def reqs(n: int) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"q{i}"}], GenerationParams(max_new_tokens=8))
            for i in range(n)]


def proxy_backend(srv, store) -> LiteLLMBackend:
    be = LiteLLMBackend("litellm_proxy/test-model", LiteLLMBackend.Options(
        api_base=srv.base_url, api_key_env="TAPIR_TEST_PROXY_KEY", batch=True, batch_poll_seconds=0.05))
    be.attach_store(store)
    return be


def batches(store) -> list[tuple]:
    return store.execute("select provider_batch_id, status, n_requests from api_batches order by created_at").fetchall()


def test_litellm_batch_functions_round_trip(store, monkeypatch):
    monkeypatch.setenv("TAPIR_TEST_PROXY_KEY", "sk-proxy-secret")

    def reply(messages, body):
        text = messages[-1]["content"]
        return fault("500") if text == "q1" else f"ok {text}"

    with OpenAIServer(reply=reply, batch_latency=0.05) as srv:
        be = proxy_backend(srv, store)
        assert type(BatchRunner(be, store).transport).__name__ == "LiteLLMBatches"
        out = CachedBackend(be, store).generate(reqs(3))
        counts = srv.stats()["batch_counts"]
        sync_calls = srv.requests
    assert [c.text if c.ok else None for c in out] == ["ok q0", None, "ok q2"]
    assert not out[1].ok and "BatchLineFailed" in out[1].error
    assert counts["batches_created"] == 1 and counts["batch_lines"] == 3 and sync_calls == 0
    assert batches(store) == [("batch_000001", "collected", 3)]
    [[stored]] = store.execute("select group_concat(coalesce(error, '') || coalesce(input_file_id, '')) "
                               "from api_batches").fetchall()
    assert "sk-proxy-secret" not in stored


def test_litellm_transport_adopts_a_batch_whose_id_was_never_stored(store, monkeypatch):
    monkeypatch.setenv("TAPIR_TEST_PROXY_KEY", "sk-proxy-secret")
    from tapir_litellm import batch as batch_mod

    with OpenAIServer(batch_latency=0.05) as srv:
        real_update = batch_mod.BatchRunner._update

        def die_before_storing_the_id(self, batch_id, **fields):
            if "provider_batch_id" in fields:
                raise KeyboardInterrupt
            real_update(self, batch_id, **fields)

        monkeypatch.setattr(batch_mod.BatchRunner, "_update", die_before_storing_the_id)
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(proxy_backend(srv, store), store).generate(reqs(2))
        monkeypatch.setattr(batch_mod.BatchRunner, "_update", real_update)
        out = CachedBackend(proxy_backend(srv, store), store).generate(reqs(2))
        counts = srv.stats()["batch_counts"]
    assert [c.text for c in out] == ["echo: q0", "echo: q1"]
    assert counts["batches_created"] == 1  # found through litellm.list_batches by its metadata
    assert batches(store) == [("batch_000001", "collected", 2)]


@pytest.mark.parametrize("model, transport", [
    ("openai/gpt-4o-mini", "openai"), ("gpt-4o-mini", None), ("azure/my-deployment", "litellm"),
    ("vertex_ai/gemini-2.0-flash", "litellm"), ("bedrock/anthropic.claude-3-haiku", "litellm"),
    ("mistral/mistral-small", "litellm"), ("gemini/gemini-2.0-flash", "litellm"), ("xai/grok-3", "litellm"),
    ("litellm_proxy/m", "litellm"), ("anthropic/claude-3-5-haiku-latest", "anthropic"), ("vllm/org/m", "vllm"),
    ("hosted_vllm/org/m", None), ("ollama/llama3", None), ("groq/llama3", None)])
def test_which_transport_serves_which_provider(model, transport):
    assert transport_name(model) == transport


def test_preflight_refuses_a_provider_without_batches_naming_the_supported_ones():
    [problem] = LiteLLMBackend.preflight("hosted_vllm/org/m", {"batch": True, "api_base": "http://127.0.0.1:9/v1"})
    assert "provider 'hosted_vllm'" in problem and "vllm run-batch" in problem
    for name in ("openai/", "azure/", "vertex_ai/", "bedrock/", "mistral/", "anthropic/", "vllm/<model>"):
        assert name in problem
    [problem] = LiteLLMBackend.preflight("ollama/llama3", {"batch": True})
    assert "provider 'ollama'" in problem and "batch: false" in problem
    assert LiteLLMBackend.preflight("ollama/llama3", {"batch": False}) == []


def test_a_server_without_a_batch_api_fails_the_requests_readably(store):
    """FastChat's or vLLM's OpenAI server: no /v1/files (HTTP 404 at the upload)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NoBatches(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            data = b'{"detail": "Not Found"}'
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NoBatches)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        be = LiteLLMBackend("openai/served", LiteLLMBackend.Options(
            api_base=f"http://127.0.0.1:{httpd.server_address[1]}/v1", batch=True, batch_poll_seconds=0.05))
        be.attach_store(store)
        out = CachedBackend(be, store).generate(reqs(2))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert all(not c.ok and c.error.startswith("BatchSubmitFailed: NotFoundError") for c in out)
    assert "re-run to submit again" in out[0].error
    assert [s for _, s, _ in batches(store)] == ["failed"]
    assert store.execute("select count(*) from llm_calls where error is null").fetchone() == (0,)


def test_a_create_that_failed_after_the_upload_is_looked_for_then_sent_once(store, monkeypatch):
    from tapir_litellm.batch_openai import OpenAIBatches

    with OpenAIServer(batch_latency=0.05) as srv:
        real_submit = OpenAIBatches.submit

        def upload_then_fail(self, batch_id, data, n, record):
            record(input_file_id="file-uploaded")
            raise TimeoutError("no answer to the create")

        monkeypatch.setattr(OpenAIBatches, "submit", upload_then_fail)
        be = LiteLLMBackend("openai/test-model", LiteLLMBackend.Options(
            api_base=srv.base_url, batch=True, batch_poll_seconds=0.05))
        be.attach_store(store)
        first = CachedBackend(be, store).generate(reqs(2))
        assert all("BatchSubmitFailed: TimeoutError" in c.error and "looks for this batch" in c.error for c in first)
        assert batches(store) == [(None, "submitting", 2)]
        monkeypatch.setattr(OpenAIBatches, "submit", real_submit)
        second = CachedBackend(be, store).generate(reqs(2))
        counts = srv.stats()["batch_counts"]
    assert [c.text for c in second] == ["echo: q0", "echo: q1"]
    assert counts["batches_created"] == 1  # not in the provider's list: sent once, under the same row
    assert batches(store) == [("batch_000001", "collected", 2)]


def test_failed_polls_are_waited_out_then_leave_the_batch_pending(store, monkeypatch):
    from tapir_litellm import batch as batch_mod
    from tapir_litellm.batch_openai import OpenAIBatches

    real_retrieve = OpenAIBatches.retrieve
    calls = {"n": 0, "fail": 2}

    def flaky(self, row):
        calls["n"] += 1
        if calls["n"] <= calls["fail"]:
            raise ConnectionError("connection reset by peer")
        return real_retrieve(self, row)

    monkeypatch.setattr(OpenAIBatches, "retrieve", flaky)
    with OpenAIServer(batch_latency=0.05) as srv:
        be = LiteLLMBackend("openai/test-model", LiteLLMBackend.Options(
            api_base=srv.base_url, batch=True, batch_poll_seconds=0.01))
        be.attach_store(store)
        first = CachedBackend(be, store).generate(reqs(2))  # two failed polls, then collected
        calls.update(n=0, fail=10**6)
        second = CachedBackend(be, store).generate(reqs(2) + [GenerationRequest(
            [{"role": "user", "content": "new"}], GenerationParams(max_new_tokens=8))])
        status_then = batches(store)[1][1]
        monkeypatch.setattr(OpenAIBatches, "retrieve", real_retrieve)
        third = CachedBackend(be, store).generate(reqs(2) + [GenerationRequest(
            [{"role": "user", "content": "new"}], GenerationParams(max_new_tokens=8))])
        counts = srv.stats()["batch_counts"]
    assert [c.text for c in first] == ["echo: q0", "echo: q1"]
    assert [c.cached for c in second[:2]] == [True, True]
    error = second[2].error
    assert "BatchPending" in error and f"its last {batch_mod.MAX_POLL_FAILURES} polls failed" in error
    assert "connection reset by peer" in error
    assert calls["n"] == batch_mod.MAX_POLL_FAILURES and counts["batches_created"] == 2
    assert status_then in ("validating", "in_progress", "completed")  # still live: the re-run collects it
    assert third[2].text == "echo: new" and [s for _, s, _ in batches(store)] == ["collected", "collected"]
