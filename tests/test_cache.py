"""The LLM-call cache: what enters the key, what is recorded, what is served."""

from __future__ import annotations

import json

import pytest

from fakes import ScriptedBackend
from tapir.cache import CachedBackend, cache_key
from tapir.roles import Completion, GenerationParams, GenerationRequest, TokenLogprob

MSGS = [{"role": "user", "content": "What is 2+2?"}]


def req(content="What is 2+2?", sample=0, **params) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": content}], GenerationParams(**params), sample)


def echo(messages):
    return f"answer to {messages[-1]['content']}"


def llm_calls(store) -> list[dict]:
    return list(store["llm_calls"].rows_where(order_by="id"))


# --- the key ---------------------------------------------------------------------


def test_same_inputs_same_key():
    a = cache_key("m", GenerationRequest([dict(m) for m in MSGS], GenerationParams(), 0))
    b = cache_key("m", GenerationRequest([dict(m) for m in MSGS], GenerationParams(), 0))
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0  # sha256 hex
    # Dict order inside a message does not matter; int vs float temperature neither.
    swapped = [{"content": "What is 2+2?", "role": "user"}]
    assert cache_key("m", GenerationRequest(swapped, GenerationParams(temperature=0), 0)) == a


def test_key_depends_on_model_id():
    assert cache_key("model-a", req()) != cache_key("model-b", req())


@pytest.mark.parametrize(
    "change",
    [
        {"max_new_tokens": 17},
        {"temperature": 0.7},
        {"stop": ("\n",)},
        {"top_logprobs": 5},
    ],
)
def test_key_depends_on_each_resolved_param(change):
    assert cache_key("m", req(**change)) != cache_key("m", req())


def test_sampled_key_depends_on_top_p_and_seed():
    base = cache_key("m", req(temperature=0.8))
    assert cache_key("m", req(temperature=0.8, top_p=0.9)) != base
    assert cache_key("m", req(temperature=0.8, seed=1)) != base
    assert cache_key("m", req(temperature=0.8, seed=1)) != cache_key("m", req(temperature=0.8, seed=2))


def test_greedy_key_ignores_top_p_and_seed():
    base = cache_key("m", req())
    assert cache_key("m", req(top_p=0.5)) == base
    assert cache_key("m", req(seed=123)) == base
    assert cache_key("m", req(top_p=0.5, seed=7)) == base


def test_key_depends_on_messages():
    base = cache_key("m", req("hello"))
    assert cache_key("m", req("hello ")) != base
    assert cache_key("m", GenerationRequest([{"role": "system", "content": "hello"}])) != base
    two_turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                 {"role": "user", "content": "hello"}]
    assert cache_key("m", GenerationRequest(two_turns)) != base


def test_key_depends_on_sample_index():
    keys = {cache_key("m", req(temperature=1.0, sample=i)) for i in range(5)}
    assert len(keys) == 5


# --- what is served and recorded ---------------------------------------------------


def test_miss_then_hit(store):
    backend = ScriptedBackend(echo, model_id="m1")
    cached = CachedBackend(backend, store, run_id="run-1")
    (first,) = cached.generate([req("q1")])
    assert (first.text, first.cached, first.error) == ("answer to q1", False, None)
    assert first.call_id == 1
    (second,) = cached.generate([req("q1")])
    assert (second.text, second.cached, second.call_id) == ("answer to q1", True, 1)
    assert len(backend.requests) == 1
    assert (cached.calls_made, cached.hits) == (1, 1)
    rows = llm_calls(store)
    assert len(rows) == 1  # a hit is not written again
    row = rows[0]
    assert row["key"] == cache_key("m1", req("q1"))
    assert row["model"] == "m1"
    assert row["run_id"] == "run-1"
    assert json.loads(row["messages"]) == [{"role": "user", "content": "q1"}]
    assert json.loads(row["params"]) == GenerationParams().resolved()
    assert row["sample"] == 0


def test_a_second_model_never_reads_the_first_models_cache(store):
    first = ScriptedBackend(lambda m: "from model A", model_id="model-a")
    second = ScriptedBackend(lambda m: "from model B", model_id="model-b")
    requests = [req("q1"), req("q2")]
    a = CachedBackend(first, store).generate(requests)
    b = CachedBackend(second, store).generate(requests)
    assert [c.text for c in a] == ["from model A"] * 2
    assert [c.text for c in b] == ["from model B"] * 2
    assert not any(c.cached for c in b)
    assert len(first.requests) == 2 and len(second.requests) == 2
    assert sorted(r["model"] for r in llm_calls(store)) == ["model-a", "model-a", "model-b", "model-b"]
    # Each model is then served from its own rows.
    again = CachedBackend(ScriptedBackend(lambda m: "new", model_id="model-a"), store).generate(requests)
    assert [c.text for c in again] == ["from model A"] * 2 and all(c.cached for c in again)


def test_errors_are_recorded_but_not_served(store):
    outcomes = iter([Completion(error="RateLimitError: slow down", latency_s=0.25), Completion(text="fine")])
    backend = ScriptedBackend(lambda m: next(outcomes), model_id="flaky")
    cached = CachedBackend(backend, store)

    (failed,) = cached.generate([req("q")])
    assert failed.error == "RateLimitError: slow down" and not failed.ok
    (ok,) = cached.generate([req("q")])  # asked again: the error was not cached
    assert (ok.text, ok.cached, ok.error) == ("fine", False, None)
    (hit,) = cached.generate([req("q")])  # now it is
    assert (hit.text, hit.cached) == ("fine", True)
    assert len(backend.requests) == 2

    rows = llm_calls(store)
    assert [(r["response"], r["error"]) for r in rows] == [(None, "RateLimitError: slow down"), ("fine", None)]
    assert rows[0]["latency_s"] == 0.25
    assert rows[0]["key"] == rows[1]["key"]


def test_duplicates_in_one_batch_are_sent_once(store):
    backend = ScriptedBackend(echo, model_id="m")
    seen = []
    out = CachedBackend(backend, store).generate(
        [req("a"), req("b"), req("a"), req("a", sample=1)], on_result=lambda i, c: seen.append(i)
    )
    assert [c.text for c in out] == ["answer to a", "answer to b", "answer to a", "answer to a"]
    assert [r.messages[0]["content"] for r in backend.requests] == ["a", "b", "a"]
    assert [r.sample for r in backend.requests] == [0, 0, 1]
    assert sorted(seen) == [0, 1, 2, 3]  # every index reported, duplicates included
    assert out[0].call_id == out[2].call_id
    assert len(llm_calls(store)) == 3


def test_tokens_cost_latency_and_logprobs_are_stored_and_served(store):
    logprobs = [TokenLogprob("7", -0.1, [("7", -0.1), ("8", -2.5)])]
    backend = ScriptedBackend(
        lambda m: Completion(text="7", prompt_tokens=11, completion_tokens=1, cost=0.0025, latency_s=1.5,
                             logprobs=logprobs),
        model_id="m",
    )
    cached = CachedBackend(backend, store)
    cached.generate([req("rate", top_logprobs=2)])
    row = llm_calls(store)[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost"], row["latency_s"], row["error"]) == (
        11, 1, 0.0025, 1.5, None)
    assert json.loads(row["logprobs"]) == [["7", -0.1, [["7", -0.1], ["8", -2.5]]]]

    (hit,) = cached.generate([req("rate", top_logprobs=2)])
    assert hit.cached
    assert (hit.prompt_tokens, hit.completion_tokens, hit.cost) == (11, 1, 0.0025)
    assert hit.logprobs == logprobs


def test_latency_is_measured_when_the_backend_gives_none(store):
    CachedBackend(ScriptedBackend(echo, model_id="m"), store).generate([req("q")])
    latency = llm_calls(store)[0]["latency_s"]
    assert latency is not None and 0 <= latency < 5


class OutOfOrderBackend:
    """Finishes its batch in reverse order, as a concurrent API backend may."""

    model_id = "async-ish"

    def __init__(self):
        self.batches = []

    def generate(self, requests, on_result=None):
        self.batches.append([r.messages[0]["content"] for r in requests])
        out = [Completion(text=r.messages[0]["content"].upper()) for r in requests]
        for j in reversed(range(len(requests))):
            if on_result:
                on_result(j, out[j])
        return out


def test_on_result_is_called_per_request_in_order_of_completion(store):
    cached = CachedBackend(OutOfOrderBackend(), store)
    cached.generate([req("b")])  # b is cached from now on
    seen = []
    out = cached.generate([req("a"), req("b"), req("c"), req("d")], on_result=lambda i, c: seen.append((i, c.text)))
    assert cached.backend.batches == [["b"], ["a", "c", "d"]]
    # The hit first, then misses as the backend finished them: d, c, a.
    assert seen == [(1, "B"), (3, "D"), (2, "C"), (0, "A")]
    assert [c.text for c in out] == ["A", "B", "C", "D"]
    # Rows are written as results arrive, so a crash mid-batch keeps them.
    assert [r["response"] for r in llm_calls(store)] == ["B", "D", "C", "A"]


class ReturnOnlyBackend:
    """Never calls on_result; CachedBackend must still record and report."""

    model_id = "quiet"

    def generate(self, requests, on_result=None):
        return [Completion(text=f"r{i}") for i, _ in enumerate(requests)]


def test_backend_that_only_returns_is_tolerated(store):
    seen = []
    out = CachedBackend(ReturnOnlyBackend(), store).generate([req("x"), req("y")], on_result=lambda i, c: seen.append(i))
    assert [c.text for c in out] == ["r0", "r1"]
    assert seen == [0, 1]
    assert [r["response"] for r in llm_calls(store)] == ["r0", "r1"]


def test_crash_mid_batch_keeps_finished_calls(store):
    class Crashing:
        model_id = "crashy"

        def generate(self, requests, on_result=None):
            on_result(0, Completion(text="first"))
            raise KeyboardInterrupt  # the user pressed Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        CachedBackend(Crashing(), store).generate([req("1"), req("2")])
    backend = ScriptedBackend(echo, model_id="crashy")
    out = CachedBackend(backend, store).generate([req("1"), req("2")])
    assert [c.text for c in out] == ["first", "answer to 2"]
    assert [r.messages[0]["content"] for r in backend.requests] == ["2"]


def test_pass_through_attributes(store):
    backend = ScriptedBackend(echo, model_id="m")
    backend.tokenizer = "tok"
    cached = CachedBackend(backend, store)
    assert cached.model_id == "m"
    assert cached.tokenizer == "tok"


def test_empty_batch(store):
    backend = ScriptedBackend(echo, model_id="m")
    assert CachedBackend(backend, store).generate([]) == []
    assert backend.requests == []


def test_large_batch_lookup_in_chunks():
    from tapir.store import open_store

    mem = open_store(memory=True)
    requests = [req(f"q{i}") for i in range(1234)]  # more than one lookup chunk
    first = ScriptedBackend(echo, model_id="m")
    out = CachedBackend(first, mem).generate(requests)
    assert len(first.requests) == 1234
    second = ScriptedBackend(echo, model_id="m")
    again = CachedBackend(second, mem).generate(requests)
    assert second.requests == []
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in out] == [f"answer to q{i}" for i in range(1234)]


# --- encoding each call once ---------------------------------------------------------


@pytest.mark.parametrize("request_", [
    req(),
    req("Ünïcode — 数学 \"quoted\" \\ back\nslash", sample=3, temperature=0.7, top_p=0.9, seed=11, stop=("\n\n",)),
    GenerationRequest([{"role": "system", "content": "sys"}, {"role": "user", "content": "u", "name": "x"}],
                      GenerationParams(max_new_tokens=7, top_logprobs=5)),
    GenerationRequest([{"role": "user", "content": "list stop"}], GenerationParams(stop=["a", "b"])),
])
def test_the_key_is_the_digest_of_the_payload_it_always_was(request_):
    """encode_request builds the key's JSON from the column texts it
    returns; byte for byte the dumps of the payload dict, so every cached
    answer of an existing database is found again."""
    import hashlib

    from tapir.cache import encode_request
    from tapir.store.db import dumps

    payload = {"model": "prov/m-ü", "params": request_.params.resolved(), "messages": request_.messages,
               "sample": request_.sample}
    key, params, messages = encode_request("prov/m-ü", request_)
    assert key == hashlib.sha256(dumps(payload).encode()).hexdigest() == cache_key("prov/m-ü", request_)
    assert (params, messages) == (dumps(request_.params.resolved()), dumps(request_.messages))


def test_parameter_sets_that_compare_equal_keep_their_own_encoding():
    from tapir.cache import params_json
    from tapir.store.db import dumps

    for p in (GenerationParams(temperature=0), GenerationParams(temperature=0.0), GenerationParams(max_new_tokens=True),
              GenerationParams(max_new_tokens=1), GenerationParams(temperature=0.5, seed=1)):
        assert params_json(p) == dumps(p.resolved())


def test_a_call_encodes_its_messages_once_and_its_params_once_per_set(store, monkeypatch):
    """Per call one JSON encoding of its messages (for the key and the
    llm_calls row alike); the parameters once for the whole batch."""
    import tapir.cache as cache_module

    encoded = []
    real = cache_module.dumps

    def counting(value):
        if isinstance(value, (dict, list)):
            encoded.append(type(value).__name__)
        return real(value)

    monkeypatch.setattr(cache_module, "dumps", counting)
    cache_module._PARAMS_JSON.clear()
    requests = [req(f"q{i}", max_new_tokens=33) for i in range(20)]
    CachedBackend(ScriptedBackend(echo, model_id="m"), store).generate(requests)
    assert sorted(encoded) == ["dict"] + ["list"] * 20
    rows = llm_calls(store)
    assert [json.loads(r["messages"]) for r in rows] == [r.messages for r in requests]
    assert {r["params"] for r in rows} == {real(GenerationParams(max_new_tokens=33).resolved())}


def test_utcnow_is_the_iso_text_datetime_gives(monkeypatch):
    """utcnow formats the date and time once per second; its text is
    datetime's ISO format in milliseconds (truncated), with a Z."""
    from datetime import datetime, timezone

    from tapir.store import db

    for ns in (1_796_600_000_123_456_789, 1_796_600_000_999_999_999, 1_796_600_001_000_000_000,
               1_796_600_001_000_999_999, 946_684_799_999_000_000):
        monkeypatch.setattr(db.time, "time_ns", lambda ns=ns: ns)
        when = datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc)
        assert db.utcnow() == when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
