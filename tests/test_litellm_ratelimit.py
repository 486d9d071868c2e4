"""Requests- and tokens-per-minute limits of the litellm backend (``rpm``,
``tpm``): one allowance per model, shared by every thread, backend and
server of it, measured at local servers that record each request's arrival."""

from __future__ import annotations

import threading

import pytest
from tapir_testing.openai_server import OpenAIServer

from tapir.roles import GenerationParams, GenerationRequest


def requests(n: int, tag: str = "", max_new_tokens: int = 8) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"question {tag}{i}"}],
                              GenerationParams(max_new_tokens=max_new_tokens)) for i in range(n)]


def backend(model: str, **options):
    from tapir_litellm.backend import LiteLLMBackend

    return LiteLLMBackend(model, LiteLLMBackend.Options(**{"concurrency": 8, "timeout": 10.0, **options}))


def rate(times: list[float]) -> float:
    """Requests per second between the first and the last arrival."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def warmed(be, *servers):
    """``be`` after one request (the HTTP session is made then: its delay is not the limiter's)."""
    be.generate(requests(1, "warm-up"))
    for srv in servers:
        srv.reset_counts()
    return be


def test_rpm_paces_requests_at_the_limit():
    with OpenAIServer() as srv:
        out = warmed(backend("openai/rpm-a", api_base=srv.base_url, rpm=300), srv).generate(requests(16))
        arrivals = srv.arrivals
    assert all(c.ok for c in out)
    achieved = rate(arrivals)  # 300 rpm = 5 per second
    # The limiter lets one request go every 0.2 s; the server sees each
    # arrival a send later, and on a loaded machine a send can lag by tens of
    # milliseconds: six arrivals then fit in a second (the last on time, the
    # first late), though no two were let go less than 0.2 s apart. The
    # bounds allow 100 ms of such lag; a limiter with a burst (a bucket of 5,
    # full at the start, lets 9 through in the first second) fails both.
    assert 4.5 <= achieved <= 5.2, achieved
    assert srv.max_in_window(0.9) <= 5, srv.arrivals


def test_rpm_is_shared_by_threads_backends_and_servers_of_a_model():
    # Answers take 0.6 s, so requests overlap and the pool spreads them over both servers.
    with OpenAIServer(latency=0.6) as one, OpenAIServer(latency=0.6) as two:
        a = backend("openai/rpm-shared", api_bases=[one.base_url, two.base_url], rpm=240)
        b = backend("openai/rpm-shared", api_base=one.base_url, rpm=240)
        warmed(a, one, two)
        threads = [threading.Thread(target=a.generate, args=(requests(8, "a"),)),
                   threading.Thread(target=b.generate, args=(requests(8, "b"),))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        arrivals = one.arrivals + two.arrivals
    assert len(arrivals) == 16 and two.arrivals  # both servers served
    achieved = rate(arrivals)  # 240 rpm = 4 per second for the model, all of it together
    assert 3.6 <= achieved <= 4.05, achieved


def test_tpm_paces_by_tokens_and_follows_the_reported_usage():
    # Each reply reports 5 prompt + 95 completion tokens: 100 a request.
    def reply(messages, body):
        return {"text": "an answer", "prompt_tokens": 5, "completion_tokens": 95}

    with OpenAIServer(reply=reply) as srv:
        be = warmed(backend("openai/tpm", api_base=srv.base_url, tpm=12000), srv)
        out = be.generate(requests(7, max_new_tokens=95))
        arrivals = srv.arrivals
    assert all(c.ok for c in out)
    tokens_per_second = 100 * rate(arrivals)  # 12000 tpm = 200 tokens a second = 2 requests a second
    assert 170 <= tokens_per_second <= 205, tokens_per_second


def test_no_limit_sends_at_once():
    with OpenAIServer() as srv:
        backend("openai/unlimited", api_base=srv.base_url).generate(requests(16))
        assert srv.max_in_window(0.5) == 16


@pytest.mark.parametrize("field", ["rpm", "tpm"])
def test_a_limit_must_be_positive(field):
    from pydantic import ValidationError

    from tapir_litellm.backend import LiteLLMBackend

    with pytest.raises(ValidationError):
        LiteLLMBackend.Options(**{field: 0})
