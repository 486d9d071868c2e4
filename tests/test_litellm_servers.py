"""One model on several servers (``api_bases``): load spread by per-server
concurrency, failover when a server dies mid-run, no request lost."""

from __future__ import annotations

import collections
import threading

import pytest

pytest.importorskip("litellm")

from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402
from tapir_testing.openai_server import OpenAIServer  # noqa: E402


def reqs(n: int, prefix: str = "q") -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"{prefix}{i}"}], GenerationParams(max_new_tokens=8))
            for i in range(n)]


def named(name):
    return lambda messages, body: f"{name}|{messages[-1]['content']}"


def pool_backend(servers, concurrency, transport="auto", **options):
    bases = [{"url": s.base_url, "concurrency": c} for s, c in zip(servers, concurrency)]
    return LiteLLMBackend("openai/test-model", LiteLLMBackend.Options(
        api_bases=bases, transport=transport, retry_base_seconds=0.01, retry_cap_seconds=0.05, **options))


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_load_follows_per_server_concurrency(transport):
    with OpenAIServer(reply=named("a"), latency=0.03) as a, OpenAIServer(reply=named("b"), latency=0.03) as b, \
            OpenAIServer(reply=named("c"), latency=0.03) as c:
        be = pool_backend([a, b, c], [2, 2, 4], transport=transport)
        out = be.generate(reqs(160))
        peaks = (a.peak_in_flight, b.peak_in_flight, c.peak_in_flight)
        served = collections.Counter(x.text.split("|")[0] for x in out)
    assert all(x.ok for x in out) and [x.text.split("|")[1] for x in out] == [f"q{i}" for i in range(160)]
    assert peaks == (2, 2, 4)  # each server's limit, reached
    # c has half the slots: about half the load (a and b a quarter each).
    assert 0.40 <= served["c"] / 160 <= 0.60 and 0.17 <= served["a"] / 160 <= 0.33, served
    assert be.model_id.count("|") == 2 and be.model_id.startswith("litellm:openai/test-model@")
    stats = be.server_stats()
    assert sum(s["ok"] for s in stats.values()) >= 160


def test_a_server_killed_mid_run_loses_nothing():
    """Three servers in their own processes; one is SIGKILLed after 80 answers."""
    servers = [OpenAIServer(reply=named(n), latency=0.05, process=True).start() for n in "abc"]
    a, b, c = servers
    try:
        be = pool_backend(servers, [4, 4, 4], timeout=2.0)
        n = 360
        answered = [0]
        served_before: dict[str, int] = {}
        killed = threading.Event()

        def on_result(i, completion):
            answered[0] += 1
            if answered[0] == 80 and not killed.is_set():
                served_before.update({u: s["ok"] for u, s in be.server_stats().items()})
                b.kill()
                killed.set()

        out = be.generate(reqs(n), on_result=on_result)
        assert killed.is_set()
        served = collections.Counter(x.text.split("|")[0] for x in out if x.ok)
        stats = be.server_stats()
        alive_requests = a.requests + c.requests
    finally:
        for s in servers:
            s.stop()
    assert all(x.ok for x in out), [x.error for x in out if not x.ok][:3]  # every request answered
    assert [x.text.split("|")[1] for x in out] == [f"q{i}" for i in range(n)]
    assert sum(served.values()) == n
    print(f"\nfailover: answers per server {dict(served)}; before the kill {served_before}; "
          f"failed attempts on the killed one {stats[b.base_url]['failed']} {stats[b.base_url]['failures']}")
    assert served["b"] < n / 3 and served["a"] + served["c"] > 2 * n / 3 - 10
    assert stats[b.base_url]["failed"] >= 1 and stats[b.base_url]["down"]
    assert alive_requests == served["a"] + served["c"]  # the live servers answered everything they got


def test_all_servers_down_is_an_error_per_request_not_a_hang():
    with OpenAIServer() as a, OpenAIServer() as b:
        be = pool_backend([a, b], [2, 2], max_retries=2, timeout=0.5)
        a.kill()
        b.kill()
        out = be.generate(reqs(4))
    assert all(not x.ok and "ConnectionRefused" in x.error for x in out)
