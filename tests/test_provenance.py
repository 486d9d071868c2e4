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


# ---------------------------------------------------------------- how judgments are read

from tapir import judge_reads  # noqa: E402
from tapir.judge_reads import count_read_by, judgment_provenance  # noqa: E402
from tapir.roles import JudgeRequest, Judgment  # noqa: E402
from tapir_testing.openai_server import token_distribution  # noqa: E402


def make(name: str, backend, **options):
    from tapir.plugins import registry

    return registry().get("judges", name).create(backend, options=options)


def pair_request(i: int = 0) -> JudgeRequest:
    return JudgeRequest(question=f"q{i}", answer_a=f"teacher {i}", answer_b=f"student {i}", item_id=f"item-{i}")


@pytest.fixture
def fresh_warnings():
    judge_reads._warned_missing_logprobs.clear()
    yield
    judge_reads._warned_missing_logprobs.clear()


def test_count_read_by_over_judgments_rows_and_strings():
    judgments = [Judgment(score_a=1, details={"read_by": "lenient fallback"}),
                 Judgment(score_a=1, details={"read_by": "logprobs"}),
                 Judgment(error="parse: none", details={}),
                 {"read_by": "logprobs"}, "reference parser", None]
    assert count_read_by(judgments) == {"logprobs": 2, "reference parser": 1, "lenient fallback": 1}
    assert list(count_read_by(["lenient fallback", "logprobs"])) == ["logprobs", "lenient fallback"]


def test_logprob_judge_without_logprobs_reads_the_text_says_so_and_warns_once(store, caplog, fresh_warnings):
    """FastChat's server accepts logprobs and answers without them: every
    judgment says 'lenient fallback', and the log says it once."""
    def reply(messages, body):
        assert body.get("logprobs") is True  # the judge asked
        return {"text": "Assistant 1: 8\nAssistant 2: 5", "logprobs": False}

    with OpenAIServer(reply=reply) as srv:
        judge = make("pairwise", CachedBackend(backend(srv, "auto"), store), prompt="tapir", use_logprobs=True)
        with caplog.at_level("WARNING", logger="tapir.judge_reads"):
            first = judge.judge([pair_request(0), pair_request(1)])
            second = judge.judge([pair_request(2)])
    assert [(j.score_a, j.score_b) for j in first + second] == [(6.5, 6.5)] * 3  # (8, 5) and (5, 8) averaged
    assert {j.details["read_by"] for j in first + second} == {"lenient fallback"}
    assert all(j.details["logprobs"] is False and j.details["logprobs_missing"] == 2 for j in first + second)
    warnings = [r for r in caplog.records if "without logprobs" in r.getMessage()]
    assert len(warnings) == 1
    assert "pairwise" in warnings[0].getMessage() and "4 of 4" in warnings[0].getMessage()


def test_logprob_judge_with_logprobs_reads_them_and_does_not_warn(store, caplog, fresh_warnings):
    def reply(messages, body):
        return {"text": "8", "logprobs": token_distribution({"8": 0.5, "6": 0.5})}

    with OpenAIServer(reply=reply) as srv:
        judge = make("mtbench-single", CachedBackend(backend(srv, "auto"), store), judge_mode="robust",
                     use_logprobs=True, score_only=True)
        with caplog.at_level("WARNING", logger="tapir.judge_reads"):
            [j] = judge.judge([JudgeRequest(question="q", answer_a="a", item_id="x")])
    assert j.score_a == pytest.approx(7.0) and j.details["read_by"] == "logprobs"
    assert not [r for r in caplog.records if "without logprobs" in r.getMessage()]


@pytest.mark.parametrize(
    "options, text, expected",
    [
        ({"judge_mode": "reference"}, "Rating: [[7]]", "reference parser"),
        ({"judge_mode": "robust"}, "Rating: 7", "lenient parser"),
        ({"judge_mode": "robust", "use_logprobs": True}, "Rating: 7", "logprobs"),  # the server's tokens, logprob 0
    ],
)
def test_single_judge_read_by(store, options, text, expected):
    with OpenAIServer(reply=lambda m, b: text) as srv:
        judge = make("mtbench-single", CachedBackend(backend(srv, "auto"), store), **options)
        [j] = judge.judge([JudgeRequest(question="q", answer_a="a", item_id="x")])
    assert j.score_a == 7.0 and j.details["read_by"] == expected


def test_pairwise_read_by_is_the_weaker_order(store):
    """Table 8's format in one order, tapir's lenient reading in the other:
    the judgment is as weak as its weaker order."""
    def reply(messages, body):
        if "teacher 0" in messages[-1]["content"].split("Assistant 2")[0]:
            return "Score of the Assistant 1: 8\nScore of the Assistant 2: 6"
        return "Assistant 1: 6\nAssistant 2: 8"  # Table 8's format not followed

    with OpenAIServer(reply=reply) as srv:
        judge = make("pairwise", CachedBackend(backend(srv, "auto"), store))
        [j] = judge.judge([pair_request(0)])
    assert (j.score_a, j.score_b) == (8.0, 6.0)
    assert j.details["parsed_by"] == {"ab": "table8", "ba": "lenient"}
    assert j.details["read_by"] == "lenient fallback"


def test_judge_calls_carry_role_and_item(store):
    with OpenAIServer(reply=lambda m, b: "Score of the Assistant 1: 8\nScore of the Assistant 2: 6") as srv:
        judge = make("pairwise", CachedBackend(backend(srv, "auto"), store))
        judge.judge([pair_request(0), pair_request(1)])
    rows = store.execute("select role, item_id from llm_calls order by item_id").fetchall()
    assert rows == [("judge", "item-0"), ("judge", "item-0"), ("judge", "item-1"), ("judge", "item-1")]


# ---------------------------------------------------------------- judge_repeats


def test_judge_repeats_sends_distinct_samples_and_stores_mean_and_spread(store):
    seen = []

    def reply(messages, body):
        seen.append(body.get("seed"))
        first = 9 if len(seen) % 2 else 7  # repeats disagree: 9 for the first request to arrive, 7 for the other
        return f"Assistant 1: {first}\nAssistant 2: 5"

    with OpenAIServer(reply=reply) as srv:
        cached = CachedBackend(backend(srv, "auto"), store)
        judge = make("pairwise", cached, prompt="tapir", both_orders=False, judge_repeats=2,
                     params={"temperature": 0.7})
        [j] = judge.judge([pair_request(0)])
        assert srv.requests == 2
        make("pairwise", CachedBackend(backend(srv, "auto"), store), prompt="tapir", both_orders=False,
             judge_repeats=2, params={"temperature": 0.7}).judge([pair_request(0)])
        assert srv.requests == 2  # a re-run pays for nothing: both repeats are cached
    assert len(set(seen)) == 2  # distinct samples, distinct seeds
    assert sorted(store.execute("select sample from llm_calls").fetchall()) == [(0,), (1,)]
    assert (j.score_a, j.score_b) == (8.0, 5.0)
    # The two repeats are sent at once, so which of them the server answers first (9) varies.
    assert sorted(j.details["repeats"], key=lambda r: -r["score_a"]) == [{"score_a": 9.0, "score_b": 5.0},
                                                                        {"score_a": 7.0, "score_b": 5.0}]
    assert j.details["spread"] == {"score_a": 1.0, "score_b": 0.0, "mfd": 1.0}


def test_judge_repeats_on_a_greedy_judge_is_a_config_error():
    from tapir_judges.pairwise import PairwiseJudge

    with pytest.raises(ValueError, match="temperature"):
        PairwiseJudge.Options(judge_repeats=3)
    assert PairwiseJudge.Options(judge_repeats=3, params={"temperature": 1.0}).judge_repeats == 3


def test_judgment_provenance_counts_a_scope(store):
    from tapir.store.db import dumps

    rows = [("logprobs", {"spread": {"mfd": 1.0}}, None), ("lenient fallback", {"logprobs_missing": 2,
            "spread": {"mfd": 0.0}}, None), ("logprobs", {}, "parse: no score")]
    for i, (read_by, details, error) in enumerate(rows):
        store.db["judgments"].insert({"scope": "s1", "item_id": f"i{i}", "judge": "pairwise", "position": "both",
                                      "round": 0, "read_by": read_by, "error": error,
                                      "raw": "[]", "details": dumps(details)})
    store.db["judgments"].insert({"scope": "s1", "item_id": "bench", "judge": "x", "position": "single",
                                  "round": 0, "read_by": "reference parser", "raw": "[]", "details": "not json"})
    assert judgment_provenance(store, "s1") == {
        "read_by": {"logprobs": 1, "reference parser": 1, "lenient fallback": 1},
        "logprobs_missing": 1, "mean_mfd_spread": 0.5}
