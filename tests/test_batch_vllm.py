"""``batch: true`` for ``vllm/<model>``: tapir writes the OpenAI batch JSONL,
runs ``vllm run-batch -i IN -o OUT --model M`` (here a stand-in script that
writes vLLM's output format), collects its lines; a complete output is
collected without a re-run, a killed run re-runs only what has no output line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("litellm")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402
from tapir_litellm.backend import LiteLLMBackend  # noqa: E402

# A stand-in for `vllm run-batch`: answers "echo: <last message>" in vLLM's
# output format; logs each run (input size, model) to RUN_LOG; with
# KILL_PARENT_AFTER=n it writes n lines, then SIGKILLs tapir (its parent).
FAKE_RUN_BATCH = textwrap.dedent("""
    import argparse, json, os, signal, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("-i"); p.add_argument("-o"); p.add_argument("--model")
    a = p.parse_args()
    lines = [json.loads(l) for l in open(a.i) if l.strip()]
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(json.dumps({"n": len(lines), "model": a.model}) + "\\n")
    if os.environ.get("FAIL"):
        print("CUDA out of memory (stand-in)"); sys.exit(3)
    kill_after = int(os.environ.get("KILL_PARENT_AFTER", "-1"))
    with open(a.o, "w") as out:
        for n, line in enumerate(lines):
            if n == kill_after:
                out.flush(); os.kill(os.getppid(), signal.SIGKILL); time.sleep(30)
            body = line["body"]
            text = "echo: " + body["messages"][-1]["content"]
            assert body["model"] == a.model, (body["model"], a.model)
            out.write(json.dumps({"id": f"vllm-{n}", "custom_id": line["custom_id"], "response": {
                "status_code": 200, "request_id": f"r{n}", "body": {
                    "id": f"c{n}", "object": "chat.completion", "model": a.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}},
                "error": None}) + "\\n")
    if kill_after == len(lines):
        os.kill(os.getppid(), signal.SIGKILL)
""")

CHILD = textwrap.dedent("""
    import sys
    from tapir.cache import CachedBackend
    from tapir.roles import GenerationParams, GenerationRequest
    from tapir.store import open_store
    from tapir_litellm.backend import LiteLLMBackend

    store = open_store(sys.argv[1])
    be = LiteLLMBackend("vllm/org/small-model", LiteLLMBackend.Options(
        batch=True, batch_poll_seconds=0.05, batch_command=[sys.executable, sys.argv[2]]))
    be.attach_store(store)
    requests = [GenerationRequest([{"role": "user", "content": f"q{i}"}], GenerationParams(max_new_tokens=8))
                for i in range(int(sys.argv[3]))]
    CachedBackend(be, store).generate(requests)
    print("collected")
""")


def reqs(n: int) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"q{i}"}], GenerationParams(max_new_tokens=8))
            for i in range(n)]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_run_batch.py"
    script.write_text(FAKE_RUN_BATCH)
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("RUN_LOG", str(log))
    monkeypatch.delenv("KILL_PARENT_AFTER", raising=False)
    monkeypatch.delenv("FAIL", raising=False)

    def runs() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    return script, runs


def backend(store, script) -> LiteLLMBackend:
    be = LiteLLMBackend("vllm/org/small-model", LiteLLMBackend.Options(
        batch=True, batch_poll_seconds=0.05, batch_command=[sys.executable, str(script)]))
    be.attach_store(store)
    return be


def batch_rows(store) -> list[tuple]:
    return store.execute("select provider_batch_id is not null, status, n_requests from api_batches "
                         "order by created_at").fetchall()


def test_run_batch_round_trip_then_cached(store, fake):
    script, runs = fake
    out = CachedBackend(backend(store, script), store).generate(reqs(5))
    again = CachedBackend(backend(store, script), store).generate(reqs(5))
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(5)]
    assert (out[0].prompt_tokens, out[0].completion_tokens) == (3, 2)
    assert runs() == [{"n": 5, "model": "org/small-model"}]  # one run; the re-run hit the cache
    assert all(c.cached for c in again)
    assert batch_rows(store) == [(1, "collected", 5)]
    inputs = list((store.path and __import__("pathlib").Path(store.path).parent / "batches").glob("*.input.jsonl"))
    [line] = inputs[0].read_text().splitlines()[:1]
    assert json.loads(line)["url"] == "/v1/chat/completions"


def run_child(store, script, tmp_path, n: int, kill_after: int) -> subprocess.CompletedProcess:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "KILL_PARENT_AFTER": str(kill_after)}
    return subprocess.run([sys.executable, str(child), store.path, str(script), str(n)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_complete_output_of_a_killed_tapir_is_collected_not_rerun(store, fake, tmp_path):
    script, runs = fake
    done = run_child(store, script, tmp_path, 4, kill_after=4)  # vllm finished, tapir died before collecting
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert store.execute("select count(*) from llm_calls").fetchone() == (0,)
    out = CachedBackend(backend(store, script), store).generate(reqs(4))
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(4)]
    assert [r["n"] for r in runs()] == [4]  # not run again
    assert batch_rows(store) == [(1, "collected", 4)]


def test_killed_run_reruns_only_the_requests_without_an_output_line(store, fake, tmp_path):
    script, runs = fake
    done = run_child(store, script, tmp_path, 6, kill_after=2)  # 2 lines written, then tapir is killed
    assert done.returncode == -signal.SIGKILL, done.stderr
    out = CachedBackend(backend(store, script), store).generate(reqs(6))
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(6)] and all(c.ok for c in out)
    assert [r["n"] for r in runs()] == [6, 4]  # the second run got only the 4 unanswered requests
    assert batch_rows(store) == [(1, "collected", 6)]


def test_failing_command_is_a_readable_error_and_the_next_run_submits_again(store, fake, monkeypatch):
    script, runs = fake
    monkeypatch.setenv("FAIL", "1")
    first = CachedBackend(backend(store, script), store).generate(reqs(2))
    assert all(not c.ok and "BatchFailed" in c.error and "CUDA out of memory" in c.error for c in first)
    monkeypatch.delenv("FAIL")
    second = CachedBackend(backend(store, script), store).generate(reqs(2))
    assert all(c.ok for c in second)
    assert [r["n"] for r in runs()] == [2, 2]
    assert [s for _, s, _ in batch_rows(store)] == ["failed", "collected"]


def test_preflight_finds_a_missing_run_batch_command():
    problems = LiteLLMBackend.preflight("vllm/org/small-model",
                                        {"batch": True, "batch_command": ["no-such-vllm-here", "run-batch"]})
    assert len(problems) == 1 and "'no-such-vllm-here' is not on PATH" in problems[0]
    assert "options.batch_command" in problems[0]
