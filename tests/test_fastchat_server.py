"""tapir against FastChat's own server (fschat 0.2.36: controller,
model_worker and openai_api_server, started as a user starts them).

The worker serves a GPT-2 whose reply is known (tapir_testing.fastchat_stack),
so what tapir reads can be checked exactly. FastChat's worker generates
``--limit-worker-concurrency`` requests at once and queues the rest, ignores
``logprobs``, and answers every error with HTTP 400 and a code of its own in
the body.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("fastchat")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.errors import PermanentFailure  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest, JudgeRequest  # noqa: E402

MODEL = "tapir-reply"
# MT-Bench's parser reads [[8]]; the pairwise judge reads [[8, 6]] (Assistant 1: 8, Assistant 2: 6).
REPLY = ["Rating:", "[[8]]", "[[8,", "6]]", *(f"w{i}" for i in range(200))]
TEXT = " ".join(REPLY)
K = 2  # FastChat's --limit-worker-concurrency


@pytest.fixture(scope="module")
def fastchat(tmp_path_factory):
    from tapir_testing.fastchat_stack import FastChatStack, build_reply_model

    root = tmp_path_factory.mktemp("fastchat")
    model = build_reply_model(root / MODEL, REPLY)
    with FastChatStack(model, MODEL, limit_worker_concurrency=K, log_dir=root / "logs",
                       aliases=("teacher", "judge", "rewriter")) as stack:
        yield stack


def backend_for(stack, model: str = MODEL, **options):
    from tapir_litellm.backend import LiteLLMBackend

    opts = {"api_base": stack.base_url, "concurrency": 4, "timeout": 30.0, "max_retries": 2,
            "retry_base_seconds": 0.05, **options}
    return LiteLLMBackend(f"openai/{model}", LiteLLMBackend.Options(**opts))


def asks(n: int, tag: str, tokens: int = 8) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"{tag} question {i}"}],
                              GenerationParams(max_new_tokens=tokens, temperature=0.7)) for i in range(n)]


def test_replies_are_read_exactly_with_and_without_litellm(fastchat, store):
    for transport in ("auto", "litellm"):
        results = CachedBackend(backend_for(fastchat, transport=transport), store).generate(asks(3, transport))
        assert [r.text for r in results] == ["Rating: [[8]] [[8, 6]] w0 w1 w2 w3"] * 3, transport
        assert all(r.ok and r.logprobs is None for r in results)
        assert all(r.finish_reason == "length" and r.completion_tokens for r in results)  # FastChat counts 7 of 8


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_a_model_fastchat_does_not_serve_stops_at_once(fastchat, transport):
    """FastChat says so with HTTP 400 and its code 40301 (INVALID_MODEL): no
    retry fixes it, so the stage stops instead of failing every item."""
    backend = backend_for(fastchat, model="no-such-model", transport=transport, concurrency=1)
    before = fastchat.requests()
    with pytest.raises(PermanentFailure) as err:
        backend.generate(asks(6, "wrong model"))
    text = str(err.value)
    assert "model_not_found" in text and "allowed now, your model no-such-model" in text
    assert fastchat.requests() - before == 1


def test_a_prompt_over_fastchats_context_stops_at_once(fastchat):
    backend = backend_for(fastchat, concurrency=1)
    long = [GenerationRequest([{"role": "user", "content": "word " * 5000}], GenerationParams(max_new_tokens=8))]
    with pytest.raises(PermanentFailure, match="context_length") as err:
        backend.generate(long + asks(3, "after the long one"))
    assert "maximum context length is 4096 tokens" in str(err.value)


def test_small_queue_every_generation_is_one_recorded_call(fastchat, store):
    """tapir sends 16 at a worker that generates 2 at a time: the queued
    requests wait longer than one attempt's timeout, yet none is given up
    and sent again (FastChat would generate it twice, a paid API bill it)."""
    backend = backend_for(fastchat, concurrency=16, timeout=3.0)
    cached = CachedBackend(backend, store)
    cached.generate(asks(1, "warm-up", tokens=60))  # the process's first call pays the client's start-up
    before = fastchat.generations()
    store.execute("delete from llm_calls")
    results = cached.generate(asks(40, "queue", tokens=60))
    generated = fastchat.generations() - before
    calls, attempts, errors = store.execute(
        "select count(*), sum(attempts), sum(error is not null) from llm_calls").fetchone()
    gate = backend.concurrency_stats()[fastchat.base_url]
    print(f"FastChat K={K}: {generated} generations, {calls} calls recorded, {attempts} attempts, "
          f"{errors} errors; limit {gate['ceiling']} -> {gate['limit']} (lowest {gate['lowest']})")
    assert all(r.ok and TEXT.startswith(r.text) for r in results)
    assert [len(r.text.split()) for r in results] == [60] * 40
    assert generated == calls == attempts == 40 and errors == 0
    assert gate["lowered"] >= 1 and gate["limit"] < 16


def test_a_logprob_judge_reads_fastchats_text_and_says_the_logprobs_did_not_come(fastchat, store, caplog):
    from tapir.plugins import registry

    judge = registry().get("judges", "mtbench-single").create(
        CachedBackend(backend_for(fastchat), store), options={"judge_mode": "robust", "use_logprobs": True})
    with caplog.at_level(logging.WARNING, logger="tapir.judge_reads"):
        judgments = judge.judge([JudgeRequest(f"Question {i}?", f"Answer {i}.") for i in range(3)])
    assert [j.score_a for j in judgments] == [8.0] * 3
    assert all(j.details["logprobs"] is False for j in judgments)
    warned = [r.getMessage() for r in caplog.records if "without logprobs" in r.getMessage()]
    assert len(warned) == 1 and "3 of 3 replies" in warned[0]


def test_mtbench_from_the_command_line_answered_and_judged_by_fastchat(fastchat, tmp_path):
    """``tapir bench mtbench`` as a user runs it, the model under test and the
    judge both served by FastChat: every reply is "Rating: [[8]] ...", so
    every judgment reads 8 through FastChat's own parser; each answer and
    judgment is one generation; a re-run asks nothing."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    data = Path(__file__).parent / "data" / "mtbench_small"
    served = f"{{api_base: {fastchat.base_url}, concurrency: 8}}"
    cmd = [sys.executable, "-m", "tapir", "--db", str(tmp_path / "mt.db"), "bench", "mtbench", "--json",
           "--model", f"openai/{MODEL}", "-o", f"model_options={served}", "-o", f"judge_model=openai/{MODEL}",
           "-o", f"judge_options={served}", "-o", f"data_dir={data}", "-o", "max_new_tokens=6"]
    before = fastchat.generations(), fastchat.requests()
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = {(r["task"], r["metric"]): r for r in json.loads(first.stdout)}
    assert (rows[("overall", "score")]["value"], rows[("overall", "score")]["n"]) == (8.0, 16)
    assert rows[("judge", "failures")]["value"] == 0 and rows[("generation", "failures")]["value"] == 0
    assert fastchat.generations() - before[0] == fastchat.requests() - before[1] == 32  # 16 answers, 16 judgments
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert fastchat.requests() - before[1] == 32


def test_distill_with_teacher_judge_and_rewriter_on_fastchat(fastchat, tmp_path, tiny_model, monkeypatch):
    """``tapir distill`` whose API roles are FastChat's: the pairwise judge's
    logprobs do not come, so it reads the text ([[8, 6]] in one order); each
    call recorded is one generation; a re-run sends nothing."""
    import json
    import subprocess
    import sys

    import sqlite_utils
    import yaml
    from pipeline_helpers import api_config

    monkeypatch.setenv("TAPIR_TEST_KEY", "sk-test-not-a-real-key-000000")
    cfg = api_config(tmp_path, tiny_model, fastchat.base_url)
    config = yaml.safe_load(cfg.read_text())
    # One order: this model's verdict does not depend on the answers, so both orders would cancel to MFD 0.
    config["judge"]["options"] = {"both_orders": False}
    # Its expansions are all the same text, and its refinements read as answers: failed, with their reasons.
    config["failures"] = {"max_failure_rate": {"expand": 1.0, "rewrite": 1.0}}
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "tapir", "--db", str(tmp_path / "t.db"), "distill", str(cfg)]
    before = fastchat.generations(), fastchat.requests()
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    db = sqlite_utils.Database(tmp_path / "t.db")
    judged = [(r["score_a"], r["score_b"], json.loads(r["details"])) for r in db["judgments"].rows]
    assert len(judged) == 8 and {(a, b) for a, b, _ in judged} == {(8.0, 6.0)}
    assert all(d["logprobs"] is False and d["parsed_by"] == {"ab": "lenient"} for _, _, d in judged)
    calls, attempts = db.execute("select count(*), sum(attempts) from llm_calls where model like 'litellm:%'"
                                 ).fetchone()
    generated, sent = fastchat.generations() - before[0], fastchat.requests() - before[1]
    assert generated == sent == calls == attempts and calls >= 8 + 8 + 3
    # The re-run asks only the failed expansions and refinements again (fresh draws); every request is recorded.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    calls, attempts = db.execute("select count(*), sum(attempts) from llm_calls where model like 'litellm:%'"
                                 ).fetchone()
    assert fastchat.generations() - before[0] == fastchat.requests() - before[1] == calls == attempts
    asked = dict(db.execute("select role, count(*) from llm_calls where round = 0 group by role").fetchall())
    assert asked["teacher"] == 8 and asked["judge"] == 8


@pytest.mark.filterwarnings("ignore")
def test_alpacaeval_judged_on_fastchat_says_its_logprobs_did_not_come(fastchat, tmp_path):
    """alpaca_eval's judge reads only logprobs, which FastChat does not send:
    every judgment fails as no_logprobs, the command exits 1 and says what
    helps; a re-run reads the same replies from the cache and sends nothing."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("alpaca_eval.main")
    data = Path(__file__).parent / "data" / "alpacaeval_small" / "alpaca_eval_small.json"
    served = f"{{api_base: {fastchat.base_url}, concurrency: 8}}"
    cmd = [sys.executable, "-m", "tapir", "--db", str(tmp_path / "ae.db"), "bench", "alpacaeval",
           "--model", f"openai/{MODEL}", "-o", f"model_options={served}", "-o", f"judge_model=openai/{MODEL}",
           "-o", f"judge_options={served}", "-o", f"data_path={data}", "-o", "max_new_tokens=6", "-o", "limit=4"]
    before = fastchat.requests()
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 1, first.stderr[-2000:]
    assert "4 of 4 items could not be scored" in first.stderr and "  4 x no_logprobs" in first.stderr
    assert "set judge_mode: robust" in first.stderr and "returned none in 4 of 4 replies" in first.stderr
    assert "read again from the cache and fail the same way" in first.stderr
    sent = fastchat.requests() - before
    assert sent == 8  # 4 answers, 4 judgments
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 1 and "  4 x no_logprobs" in again.stderr
    assert fastchat.requests() - before == sent
