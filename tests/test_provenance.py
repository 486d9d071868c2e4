"""Provenance of every number: the provider's reported model and
system_fingerprint per call (both litellm transports, through the cache),
how each judgment was read (logprobs, reference parser, lenient parser,
lenient fallback), the warning when a logprob judge gets no logprobs, and
repeated MFD judging (mean and spread)."""

from __future__ import annotations

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402
from tapir_testing.openai_server import OpenAIServer  # noqa: E402

FAST = dict(retry_base_seconds=0.01, retry_cap_seconds=0.05)
BOTH = pytest.mark.parametrize("transport", ["litellm", "auto"])


def backend(srv: OpenAIServer, transport: str = "litellm", **options) -> LiteLLMBackend:
    return LiteLLMBackend("openai/test-model",
                          LiteLLMBackend.Options(api_base=srv.base_url, transport=transport, **FAST, **options))


def ask(text: str, **params) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], GenerationParams(**params))


@BOTH
def test_provider_model_and_fingerprint_are_stored_per_call_and_served_from_the_cache(store, transport):
    def reply(messages, body):
        return {"text": "ok", "model": "test-model-2026-01-05", "system_fingerprint": "fp_abc123"}

    with OpenAIServer(reply=reply) as srv:
        [first] = CachedBackend(backend(srv, transport), store).generate([ask("hi")])
        [again] = CachedBackend(backend(srv, transport), store).generate([ask("hi")])
        assert srv.requests == 1
    assert (first.provider_model, first.system_fingerprint) == ("test-model-2026-01-05", "fp_abc123")
    row = store.execute("select model, provider_model, system_fingerprint from llm_calls where id = ?",
                        [first.call_id]).fetchone()
    assert row[0].startswith("litellm:openai/test-model@")  # the model asked for, as the cache names it
    assert row[1:] == ("test-model-2026-01-05", "fp_abc123")  # the model that answered, as the server says
    assert again.cached and (again.provider_model, again.system_fingerprint) == row[1:]


@BOTH
def test_a_server_without_a_fingerprint_leaves_it_null(store, transport):
    with OpenAIServer() as srv:  # answers with "model" (the one asked for) and no system_fingerprint
        [c] = CachedBackend(backend(srv, transport), store).generate([ask("hi")])
    row = store.execute("select provider_model, system_fingerprint from llm_calls where id = ?",
                        [c.call_id]).fetchone()
    assert row[0] is not None and row[0].endswith("test-model")
    assert row[1] is None
