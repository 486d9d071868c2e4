"""The litellm backend over real HTTP: litellm -> a local OpenAI-compatible
server (tapir_testing.openai_server) on 127.0.0.1. Offline; small latencies and
backoffs keep the file fast."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.errors import TapirError  # noqa: E402
from tapir_testing.openai_server import Faults, OpenAIServer, fault, token_distribution  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402

FAST = dict(retry_base_seconds=0.01, retry_cap_seconds=0.05)


def reqs(n: int, prefix: str = "q", **params) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"{prefix}{i}"}], GenerationParams(**params))
            for i in range(n)]


def lb(model_name: str, **options) -> LiteLLMBackend:
    """The backend with declared, validated options."""
    return LiteLLMBackend(model_name, LiteLLMBackend.Options(**options))


def backend(srv: OpenAIServer, **options) -> LiteLLMBackend:
    """Through litellm unless the test picks ``transport="auto"`` (the direct
    aiohttp path that ``openai/<name>`` + api_base takes by default)."""
    return lb("openai/test-model", api_base=srv.base_url, **{**FAST, "transport": "litellm", **options})


BOTH = pytest.mark.parametrize("transport", ["litellm", "auto"])


@BOTH
def test_concurrency_limit_is_the_peak_in_flight_and_results_keep_order(transport):
    seen: list[tuple[int, str, int]] = []
    with OpenAIServer(latency=0.05) as srv:
        be = backend(srv, transport=transport, concurrency=4)
        assert be.transport == {"auto": "openai", "litellm": "litellm"}[transport]
        out = be.generate(reqs(40), on_result=lambda i, c: seen.append((i, c.text, threading.get_ident())))
        assert srv.requests == 40
        assert srv.peak_in_flight == 4
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(40)]
    assert all(c.ok and not c.cached for c in out)
    assert sorted(i for i, _, _ in seen) == list(range(40))  # each index reported once
    assert {text for _, text, _ in seen} == {f"echo: q{i}" for i in range(40)}
    assert {tid for _, _, tid in seen} == {threading.get_ident()}  # callbacks in the caller's thread


def test_backends_of_one_model_share_the_limit_across_threads():
    with OpenAIServer(latency=0.05) as srv:
        a, b = backend(srv, concurrency=3), backend(srv, concurrency=3)
        outs: dict[str, list] = {}
        threads = [threading.Thread(target=lambda k=k, be=be: outs.__setitem__(k, be.generate(reqs(12, k))))
                   for k, be in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.requests == 24
        assert srv.peak_in_flight == 3
    assert [c.text for c in outs["b"]] == [f"echo: b{i}" for i in range(12)]


def test_cache_prevents_repeat_calls(store):
    with OpenAIServer(latency=0.01) as srv:
        first = CachedBackend(backend(srv, concurrency=4), store).generate(reqs(10))
        assert srv.requests == 10 and all(not c.cached for c in first)
        again = CachedBackend(backend(srv, concurrency=4), store).generate(reqs(10))
        assert srv.requests == 10  # no new calls
        assert all(c.cached for c in again)
        assert [c.text for c in again] == [c.text for c in first]
        # Another server (another api_base) is another model: no sharing.
        with OpenAIServer() as other:
            CachedBackend(backend(other), store).generate(reqs(2))
            assert other.requests == 2


@BOTH
def test_logprobs_requested_and_parsed(transport):
    def reply(messages, body):
        return {"text": "8", "logprobs": token_distribution({"8": 0.6, "7": 0.3, "9": 0.1})}

    with OpenAIServer(reply=reply) as srv:
        be = backend(srv, transport=transport)
        [with_lp] = be.generate(reqs(1, top_logprobs=3))
        [without] = be.generate(reqs(1, prefix="x"))
        bodies = srv.bodies
    assert bodies[0]["logprobs"] is True and bodies[0]["top_logprobs"] == 3
    assert "logprobs" not in bodies[1] and "top_logprobs" not in bodies[1]
    assert with_lp.text == "8"
    [tok] = with_lp.logprobs
    assert tok.token == "8" and math.isclose(tok.logprob, math.log(0.6))
    assert [t for t, _ in tok.top] == ["8", "7", "9"]
    assert [round(math.exp(lp), 6) for _, lp in tok.top] == [0.6, 0.3, 0.1]
    assert without.logprobs is None


def test_logprobs_synthesised_from_text_and_capped_at_k():
    with OpenAIServer(reply=lambda m, b: "Rating: [[8]]") as srv:
        [c] = backend(srv).generate(reqs(1, top_logprobs=2))
    assert [t.token for t in c.logprobs] == ["Rating:", " [[8]]"]
    assert all(t.logprob == 0.0 and len(t.top) == 1 for t in c.logprobs)


@BOTH
def test_params_reach_the_server(transport):
    with OpenAIServer() as srv:
        backend(srv, transport=transport, extra={"frequency_penalty": 0.5}).generate(
            [GenerationRequest([{"role": "user", "content": "hi"}],
                               GenerationParams(max_new_tokens=7, temperature=0.7, top_p=0.9, stop=("END",), seed=3),
                               sample=2)])
        [body] = srv.bodies
    assert body["model"] == "test-model"
    assert body["max_tokens"] == 7 and body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["stop"] == ["END"] and body["seed"] == GenerationParams(seed=3).sample_seed(2)
    assert body["frequency_penalty"] == 0.5


def test_tokens_latency_and_cost_recorded_in_llm_calls(store):
    with OpenAIServer(reply=lambda m, b: "one two three", latency=0.02) as srv:
        cached = CachedBackend(backend(srv), store, run_id=None)
        [c] = cached.generate([GenerationRequest([{"role": "system", "content": "be brief"},
                                                  {"role": "user", "content": "count to three"}])])
    row = store.execute("select model, prompt_tokens, completion_tokens, cost, latency_s, error, response "
                        "from llm_calls where id = ?", [c.call_id]).fetchone()
    model, pt, ct, cost, latency, error, response = row
    assert model == f"litellm:openai/test-model@{srv.base_url}"
    assert (pt, ct) == (2 + 3 + 3 + 3, 3)  # server: words + 3 per message; 3 answer tokens
    assert cost is None  # an unpriced local model: unknown, not 0, no crash
    assert 0.02 <= latency < 5
    assert error is None and response == "one two three"


@BOTH
def test_fault_mix_is_survived_and_failures_are_retried_next_run(store, transport):
    broken = {"on": True}

    def reply(messages, body):
        text = messages[-1]["content"]
        if text == "q7" and broken["on"]:
            return fault("500")  # this one always fails while broken
        return f"ok {text}"

    # Seed 5: the first 30 request indices (deterministic) hold every kind.
    faults = Faults(rates={"429": 0.12, "500": 0.1, "slow": 0.06, "malformed": 0.08, "drop": 0.05, "empty": 0.04},
                    seed=5, retry_after=0.01, slow_seconds=1.0)
    with OpenAIServer(reply=reply, faults=faults) as srv:
        be = backend(srv, transport=transport, concurrency=6, timeout=0.3, max_retries=5)
        first = CachedBackend(be, store).generate(reqs(30))
        injected = srv.faults_injected
        assert {"429", "500", "slow", "malformed", "drop", "empty"} <= set(injected)  # the mix really happened
        for i, c in enumerate(first):  # answered, or recorded as failed: never lost, never raised
            assert (c.ok and c.text == f"ok q{i}") or (not c.ok and c.error)
        assert not first[7].ok and "500" in first[7].error
        failed = [i for i, c in enumerate(first) if not c.ok]
        assert sum(c.ok for c in first) >= 26  # 6 faults in a row are rare (0.45**6 per request)
        rows = store.execute("select count(*), count(error) from llm_calls").fetchone()
        assert rows == (30, len(failed))

        broken["on"] = False
        srv.faults = None
        before = srv.requests
        second = CachedBackend(be, store).generate(reqs(30))
        assert srv.requests - before == len(failed)  # only the failed ones are asked again
        assert all(c.ok for c in second)
        assert [c.cached for c in second] == [i not in failed for i in range(30)]
        assert second[7].text == "ok q7"


@BOTH
def test_retries_are_bounded_by_count(transport):
    with OpenAIServer(faults=lambda i, body: "500") as srv:
        started = time.perf_counter()
        [c] = backend(srv, transport=transport, max_retries=3).generate(reqs(1))
        assert srv.requests == 4  # max_retries + 1 attempts
    assert not c.ok and "HTTP 500" in c.error and "4 attempt" in c.error
    assert time.perf_counter() - started < 5


def test_retries_are_bounded_by_total_time():
    with OpenAIServer(faults=lambda i, body: "503") as srv:
        [c] = backend(srv, max_retries=50, retry_base_seconds=0.1, retry_cap_seconds=0.1,
                      retry_max_seconds=0.35).generate(reqs(1))
        attempts = srv.requests
    assert not c.ok and "budget" in c.error
    assert 3 <= attempts <= 8  # waits of 0.05-0.1 s within 0.35 s


def test_retry_after_is_honoured():
    with OpenAIServer(faults=Faults(pattern=["429"], retry_after=0.4)) as srv:
        started = time.perf_counter()
        [c] = backend(srv).generate(reqs(1))
        took = time.perf_counter() - started
        assert srv.status_counts == {429: 1, 200: 1}
    assert c.ok and took >= 0.4


def test_client_errors_are_not_retried():
    with OpenAIServer(faults=lambda i, body: "400") as srv:
        [c] = backend(srv).generate(reqs(1))
        assert srv.requests == 1
    assert not c.ok and "400" in c.error


@BOTH
def test_timeout_and_dropped_connection_become_errors(transport):
    with OpenAIServer(faults=Faults(pattern=["slow", "drop"], slow_seconds=2.0)) as srv:
        started = time.perf_counter()
        out = backend(srv, transport=transport, timeout=0.3, max_retries=0, concurrency=1).generate(reqs(2))
        took = time.perf_counter() - started
    assert not out[0].ok and "Timeout" in out[0].error
    assert not out[1].ok
    assert took < 1.5


def test_generate_works_inside_a_running_event_loop():
    async def main():
        with OpenAIServer() as srv:
            return backend(srv).generate(reqs(3))

    out = asyncio.run(main())
    assert [c.text for c in out] == ["echo: q0", "echo: q1", "echo: q2"]


@BOTH
def test_api_key_from_env_is_sent_but_never_stored(store, monkeypatch, tmp_path, transport):
    from tapir.runs import Run

    secret = "sk-tapir-test-SECRET-0123456789"
    monkeypatch.setenv("TAPIR_TEST_API_KEY", secret)
    Run.start(store, {"judge": {"model": "openai/test-model", "api_key": secret, "api_key_env": "TAPIR_TEST_API_KEY"}})
    def reply(messages, body):
        return fault("500") if messages[-1]["content"] == "q1" else "fine"

    with OpenAIServer(reply=reply) as srv:
        be = backend(srv, transport=transport, api_key_env="TAPIR_TEST_API_KEY", max_retries=0)
        out = CachedBackend(be, store).generate(reqs(2))
        headers = srv.headers
    assert headers[0]["authorization"] == f"Bearer {secret}"  # it was used
    assert out[0].ok and not out[1].ok
    assert secret not in repr(be) and secret not in be.model_id and secret not in out[1].error
    store.close()
    data = b"".join(p.read_bytes() for p in Path(store.path).parent.glob(Path(store.path).name + "*"))
    assert data and secret.encode() not in data


def test_model_id_names_model_server_and_extra():
    a = lb("openai/m", api_base="http://127.0.0.1:1/v1/")
    b = lb("openai/m", api_base="http://127.0.0.1:2/v1")
    assert a.model_id == "litellm:openai/m@http://127.0.0.1:1/v1"
    assert a.model_id != b.model_id
    assert lb("openai/gpt-4o-mini").model_id == "litellm:openai/gpt-4o-mini"
    c = lb("openai/m", extra={"reasoning_effort": "low"})
    assert c.model_id.startswith("litellm:openai/m#") and c.model_id != lb("openai/m").model_id


def test_bad_options_are_user_errors(monkeypatch, pm):
    from tapir.errors import ConfigError
    from tapir.plugins import registry

    component = registry().get("backends", "litellm")
    with pytest.raises(ConfigError, match="unknown option 'temprature'"):
        component.create("openai/m", options={"temprature": 0.3})
    with pytest.raises(ConfigError, match="concurrency"):
        component.create("openai/m", options={"concurrency": 0})
    with pytest.raises(ConfigError, match="transport"):
        component.create("openai/m", options={"transport": "grpc"})
    with pytest.raises(TapirError, match="not both"):
        component.create("openai/m", options={"api_base": "http://a/v1", "api_bases": ["http://b/v1"]})
    assert lb("openai/m").generate([]) == []
    # A missing key variable is found without a call: by preflight, and by generate before sending.
    monkeypatch.delenv("TAPIR_NO_SUCH_KEY", raising=False)
    be = component.create("openai/m", options={"api_key_env": "TAPIR_NO_SUCH_KEY"})
    [problem] = LiteLLMBackend.preflight("openai/m", {"api_key_env": "TAPIR_NO_SUCH_KEY"})
    assert "TAPIR_NO_SUCH_KEY" in problem and "No request was sent" in problem
    with pytest.raises(TapirError, match="TAPIR_NO_SUCH_KEY"):
        be.generate(reqs(1))


def test_provider_model_ids_resolve_to_this_backend(pm):
    from tapir.models import load_backend, resolve

    spec = resolve("anthropic/claude-3-5-haiku-latest")
    assert (spec.backend, spec.name) == ("litellm", "anthropic/claude-3-5-haiku-latest")
    be = load_backend("openai/served-name", {"api_base": "http://127.0.0.1:9/v1", "concurrency": 2})
    assert isinstance(be, LiteLLMBackend)
    assert be.model_id == "litellm:openai/served-name@http://127.0.0.1:9/v1" and be.concurrency == 2
    assert isinstance(load_backend("litellm:gpt-4o-mini"), LiteLLMBackend)


def test_transport_choice():
    local = "http://127.0.0.1:9/v1"
    assert lb("openai/m", api_base=local).transport == "openai"  # lean direct path
    assert lb("openai/m", api_base=local, transport="litellm").transport == "litellm"
    assert lb("openai/m", api_base=local, extra={"custom_llm_provider": "x"}).transport == "litellm"
    assert lb("openai/gpt-4o-mini").transport == "litellm"
    assert lb("anthropic/claude-3-5-haiku-latest").transport == "litellm"
    assert lb("openai/m", api_base=local).model_id == lb(
        "openai/m", api_base=local, transport="litellm").model_id  # same answers, same cache


def test_cost_comes_from_litellm_price_map():
    import litellm

    litellm.register_model({"openai/tapir-priced-test-model": {
        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "litellm_provider": "openai", "mode": "chat"}})
    with OpenAIServer(reply=lambda m, b: "a b c") as srv:
        [c] = lb("openai/tapir-priced-test-model", api_base=srv.base_url, transport="litellm").generate(
            [GenerationRequest([{"role": "user", "content": "x y"}])])
    assert (c.prompt_tokens, c.completion_tokens) == (5, 3)
    assert math.isclose(c.cost, 5e-6 + 6e-6)


def test_server_process_mode_counts_like_thread_mode():
    with OpenAIServer(latency=0.05, process=True, faults=["429"]) as srv:
        out = backend(srv, concurrency=3).generate(reqs(9))
        assert srv.requests == 10 and srv.peak_in_flight == 3
        assert srv.status_counts == {429: 1, 200: 9} and srv.faults_injected == {"429": 1}
        srv.reset_counts()
        assert srv.requests == 0
    assert all(c.ok for c in out)


def test_paths_are_not_provider_ids(pm):
    from tapir_litellm import resolve_model

    assert resolve_model("openai/gpt-4o-mini") == ("litellm", "openai/gpt-4o-mini", {})
    assert resolve_model("ollama/llama3:8b") == ("litellm", "ollama/llama3:8b", {})
    for path in ("./out/student", "/models/x", "../x/y", "~/m/x", "hf:org/model", "gpt-4o"):
        assert resolve_model(path) is None


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")  # litellm, on cancel
def test_an_error_in_on_result_propagates_and_stops_the_batch():
    def explode(i, completion):
        raise RuntimeError("callback failed")

    with OpenAIServer(latency=0.05) as srv:
        with pytest.raises(RuntimeError, match="callback failed"):
            backend(srv, concurrency=2).generate(reqs(20), on_result=explode)
        time.sleep(0.2)
        assert srv.requests < 20  # the rest was cancelled, not sent
