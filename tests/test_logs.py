"""`tapir logs` (filters, -n, --json, prompt and response shown and cut),
global options anywhere (`--db`, `--debug`), read-only commands never
create a database, unknown names are errors; the hf backend's finish reason
and per-request latency; truncation.teacher drop / flag / keep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tapir.cli import _add_commands, cli, hoist_global_options
from tapir.store import open_store


@pytest.fixture
def logs_db(tmp_path):
    """Two runs; calls by three roles in two stages, one failed, one cut."""
    path = tmp_path / "calls.db"
    store = open_store(path)
    db = store.db
    db["runs"].insert_all([{"id": "run-a", "name": "alpha", "status": "done", "created_at": "2026-01-01"},
                           {"id": "run-b", "name": "beta", "status": "done", "created_at": "2026-01-02"}])
    db["stages"].insert_all([
        {"run_id": "run-a", "name": "teacher_answers", "round": 0, "status": "done", "key": "keyteacher0"},
        {"run_id": "run-a", "name": "judge", "round": 0, "status": "done", "key": "keyjudge0"},
        # run-b reused run-a's teacher stage and has its own judge
        {"run_id": "run-b", "name": "teacher_answers", "round": 0, "status": "done", "key": "keyteacher0",
         "reused_from": "run-a"},
        {"run_id": "run-b", "name": "judge", "round": 0, "status": "done", "key": "keyjudge1"},
    ])

    def call(i, role, stage_key, run, model="openai/gpt-4o", error=None, finish="stop", item=None, text=None):
        return {"key": f"k{i}", "model": model, "params": json.dumps({"max_new_tokens": 8}),
                "messages": json.dumps([{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": f"question {i} " + "x" * 900}]),
                "sample": 0, "response": None if error else (text or f"answer {i}"), "prompt_tokens": 10,
                "completion_tokens": 5, "cost": 0.001, "latency_s": 0.5, "error": error, "run_id": run,
                "created_at": f"2026-01-01T00:00:{i:02d}Z", "stage_key": stage_key, "role": role,
                "item_id": item or f"seed-{i:04d}", "round": 0, "finish_reason": None if error else finish}

    db["llm_calls"].insert_all([
        call(1, "teacher", "keyteacher0", "run-a"),
        call(2, "teacher", "keyteacher0", "run-a", finish="length", text="cut " * 300),
        call(3, "judge", "keyjudge0", "run-a", model="openai/gpt-4"),
        call(4, "judge", "keyjudge0", "run-a", model="openai/gpt-4", error="RateLimitError (HTTP 429): slow down"),
        call(5, "judge", "keyjudge1", "run-b", model="openai/gpt-4"),
        call(6, "rewriter", None, None, model="openai/gpt-4o-mini"),
    ])
    store.close()
    return path


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPIR_DB", raising=False)
    _add_commands()

    def run(args, code=0):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == code, result.output
        return result

    return run


def ids(output: str) -> list[int]:
    return [c["id"] for c in json.loads(output)]


def test_default_shows_the_three_newest_with_prompt_and_response(invoke, logs_db):
    out = invoke(["--db", str(logs_db), "logs"]).output
    assert [line.split()[2] for line in out.splitlines() if line.startswith("## call")] == ["6", "5", "4"]
    assert "### prompt" in out and "[system] Be brief." in out and "[user] question 5" in out
    assert "### response\nanswer 5" in out
    assert "### error\nRateLimitError (HTTP 429): slow down" in out
    assert "judge, judge keyjudge1, round 0, item seed-0005" in out
    assert "more characters; --full shows all" in out  # the 900-character prompt is cut
    full = invoke(["--db", str(logs_db), "logs", "-n", "1", "--full"]).output
    assert "x" * 900 in full and "--full shows all" not in full


def test_filters(invoke, logs_db):
    db = ["--db", str(logs_db)]
    assert ids(invoke([*db, "logs", "-n", "0", "--json"]).output) == [6, 5, 4, 3, 2, 1]
    assert ids(invoke([*db, "logs", "--role", "teacher", "--json"]).output) == [2, 1]
    assert ids(invoke([*db, "logs", "--status", "error", "--json"]).output) == [4]
    assert ids(invoke([*db, "logs", "--status", "ok", "-n", "0", "--json"]).output) == [6, 5, 3, 2, 1]
    assert ids(invoke([*db, "logs", "-m", "openai/gpt-4", "-n", "0", "--json"]).output) == [5, 4, 3]
    # a run: its stages' keys, reused ones included
    assert ids(invoke([*db, "logs", "--run", "run-b", "-n", "0", "--json"]).output) == [5, 2, 1]
    assert ids(invoke([*db, "logs", "--run", "alpha", "-n", "0", "--json"]).output) == [4, 3, 2, 1]  # by name
    assert ids(invoke([*db, "logs", "--run", "run-b", "--stage", "judge", "--json"]).output) == [5]
    assert ids(invoke([*db, "logs", "--stage", "judge", "-n", "0", "--json"]).output) == [5, 4, 3]
    assert ids(invoke([*db, "logs", "--stage", "keyjudge0", "-n", "0", "--json"]).output) == [4, 3]  # a key
    assert ids(invoke([*db, "logs", "--item", "seed-0003", "--json"]).output) == [3]
    assert ids(invoke([*db, "logs", "-n", "2", "--json"]).output) == [6, 5]
    one = json.loads(invoke([*db, "logs", "--role", "teacher", "-n", "1", "--json"]).output)[0]
    assert one["finish_reason"] == "length" and one["stage"] == "teacher_answers"
    assert one["messages"][0] == {"role": "system", "content": "Be brief."}  # parsed, not a JSON string
    assert one["params"] == {"max_new_tokens": 8}
    text = invoke([*db, "logs", "--role", "teacher", "-n", "1"]).output
    assert "finish: length (cut at max_new_tokens)" in text


@pytest.mark.parametrize("args, message", [
    (["--role", "nosuch"], "no role 'nosuch' in the call log. Known: judge, rewriter, teacher"),
    (["-m", "openai/gpt-5"], "no model 'openai/gpt-5'"),
    (["--run", "nosuch"], "no run 'nosuch'"),
    (["--stage", "nosuch"], "no stage 'nosuch'"),
    (["--run", "run-b", "--stage", "expand"], "Stages: judge, teacher_answers"),
])
def test_unknown_names_are_errors(invoke, logs_db, args, message):
    out = invoke(["--db", str(logs_db), "logs", *args], code=2).output  # command-line mistakes
    assert message in out


def test_db_before_or_after_the_subcommand(invoke, logs_db):
    before = invoke(["--db", str(logs_db), "logs", "--json"]).output
    after = invoke(["logs", "--json", "--db", str(logs_db)]).output
    equals = invoke(["logs", f"--db={logs_db}", "--json"]).output
    assert before == after == equals and ids(before) == [6, 5, 4]
    runs_before = invoke(["--db", str(logs_db), "runs"]).output
    runs_after = invoke(["runs", "--db", str(logs_db)]).output
    assert runs_before == runs_after and "run-a  alpha" in runs_after
    shown = invoke(["runs", "show", "run-a", "--db", str(logs_db)]).output
    assert "run run-a (alpha)" in shown


def test_read_only_commands_never_create_a_database(invoke, tmp_path):
    for args in (["logs"], ["runs"], ["runs", "show", "x"], ["logs", "--db", "sub/none.db"],
                 ["runs", "--db", "none.db"]):
        out = invoke(args, code=2).output
        assert "no database at" in out
    assert list(tmp_path.rglob("*.db")) == [] and not (tmp_path / "sub").exists()


def test_hoist_global_options():
    assert hoist_global_options(["runs", "show", "R", "--db", "x.db"]) == ["--db", "x.db", "runs", "show", "R"]
    assert hoist_global_options(["logs", "--db=x.db", "--debug", "-n", "2"]) == \
        ["--db=x.db", "--debug", "logs", "-n", "2"]
    assert hoist_global_options(["prompt", "--", "--db", "x"]) == ["prompt", "--", "--db", "x"]


# --- errors: one line and the fix; the traceback under --debug ----------------


@pytest.fixture
def failing_command():
    import click

    @cli.command("test-explode")
    @click.option("--offline", is_flag=True)
    def explode(offline):
        if offline:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                          "them in the cached files.\nCheck your internet connection or see how to run the "
                          "library in offline mode at 'https://huggingface.co/docs/...'.")
        raise ValueError("bad thing\nsecond line of detail")

    yield
    cli.commands.pop("test-explode", None)


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(failing_command, invoke):
    out = invoke(["test-explode"], code=1).output
    assert out.splitlines() == ["Error: ValueError: bad thing", "(run with --debug for the traceback)"]
    assert "Traceback" not in out
    result = CliRunner().invoke(cli, ["test-explode", "--debug"])
    assert isinstance(result.exception, ValueError)  # re-raised: click's caller prints the traceback
    result = CliRunner().invoke(cli, ["--debug", "test-explode"])
    assert isinstance(result.exception, ValueError)


def test_offline_hub_error_says_what_to_do(failing_command, invoke):
    out = invoke(["test-explode", "--offline"], code=1).output
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Error: OSError: We couldn't connect to 'https://huggingface.co'")
    assert "local Hugging Face cache" in lines[1] and "hf download" in lines[1]


def test_verbose_flag_sets_tapir_verbose(invoke, logs_db, monkeypatch):
    import os

    monkeypatch.setenv("TAPIR_VERBOSE", "")  # restored (unset) after the test
    invoke(["-v", "--db", str(logs_db), "logs", "-n", "1"])
    assert os.environ.get("TAPIR_VERBOSE") == "1"


# --- the hf backend: finish reason and per-request latency ---------------------


def test_hf_backend_finish_reason_and_latency_share(tiny_model, tmp_path):
    from tapir.cache import CachedBackend
    from tapir.plugins import registry
    from tapir.roles import GenerationParams, GenerationRequest

    backend = registry().get("backends", "hf").create(str(tiny_model), options={"batch_size": 4,
                                                                                "ignore_eos": True})
    store = open_store(tmp_path / "hf.db")
    cached = CachedBackend(backend, store, "r")
    requests = [GenerationRequest([{"role": "user", "content": f"say {w}"}], GenerationParams(max_new_tokens=5),
                                  meta={"item_id": f"i{k}"}) for k, w in enumerate("abcd")]
    import time

    started = time.perf_counter()
    out = cached.generate(requests)
    wall = time.perf_counter() - started
    assert [c.finish_reason for c in out] == ["length"] * 4  # ignore_eos: every answer runs to the limit
    assert all(c.completion_tokens == 5 for c in out)
    latencies = [c.latency_s for c in out]
    assert len(set(latencies)) == 1 and sum(latencies) <= wall  # a share each, not the batch time each
    rows = store.execute("select item_id, finish_reason from llm_calls order by id").fetchall()
    assert sorted(rows) == [(f"i{k}", "length") for k in range(4)]
    # a cache hit serves the finish reason too
    again = cached.generate(requests[:1])
    assert again[0].cached and again[0].finish_reason == "length"
    store.close()


# --- truncation.teacher: drop / flag / keep -------------------------------------


class _Job:
    def __init__(self, ctx):
        self.ctx, self.round, self.key, self.info = ctx, 0, "k", {}
        self.oks, self.fails = [], []

    def scope(self, *a):
        return "ingest-key"

    def todo(self, ids):
        return list(ids)

    def ok(self, item_id, call_id=None):
        self.oks.append(item_id)

    def fail(self, item_id, reason, kind="error", http_status=None, call_id=None):
        self.fails.append((item_id, reason, kind))

    def fail_completion(self, item_id, completion, what=""):
        self.fails.append((item_id, completion.error, "error"))


def _run_teacher_stage(policy, capsys):
    from tapir.config import TruncationConfig
    from tapir.pipeline.stages.answers import TeacherAnswers
    from tapir.roles import Completion, GenerationParams, Item

    items = [Item(f"i{k}", f"q{k}", "", None, None, {}) for k in range(4)]
    saved = []

    class Teacher:
        def answer(self, todo, params, on_result=None):
            for i, it in enumerate(todo):
                on_result(i, Completion(text=f"a{i}", finish_reason="length" if i % 2 else "stop", call_id=i))

    gen = SimpleNamespace(max_new_tokens=7, temperature=0.0, top_p=1.0)
    config = SimpleNamespace(data=SimpleNamespace(use_dataset_answers=False),
                             teacher=SimpleNamespace(model=SimpleNamespace(model="m", generation=gen)),
                             truncation=TruncationConfig(teacher=policy))
    ctx = SimpleNamespace(config=config, items=lambda scope: items, teacher=Teacher(),
                          save_response=lambda *a: saved.append(a[1]))
    job = _Job(ctx)
    capsys.readouterr()
    TeacherAnswers().run(job)
    assert GenerationParams  # imported for the stage's params
    return job, saved, capsys.readouterr().err


def test_truncation_flag_keeps_and_warns(capsys, monkeypatch):
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    job, saved, err = _run_teacher_stage("flag", capsys)
    assert saved == ["i0", "i1", "i2", "i3"] and job.fails == []
    assert job.info["truncated_answers"] == 2
    assert "warning: 2 of 4 teacher answers were cut at max_new_tokens (7)" in err


def test_truncation_drop_fails_the_cut_items(capsys, monkeypatch):
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    job, saved, err = _run_teacher_stage("drop", capsys)
    assert saved == ["i0", "i2"] and job.oks == ["i0", "i2"]
    assert job.fails == [("i1", "answer cut at max_new_tokens (7)", "truncated"),
                         ("i3", "answer cut at max_new_tokens (7)", "truncated")]
    assert "2 of 4 teacher answers were cut" in err and "dropped" in err


def test_truncation_keep_is_silent(capsys, monkeypatch):
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    job, saved, err = _run_teacher_stage("keep", capsys)
    assert len(saved) == 4 and job.fails == [] and "cut" not in err


def test_truncation_config_rejects_unknown_choice():
    from pydantic import ValidationError

    from tapir.config import TruncationConfig

    with pytest.raises(ValidationError):
        TruncationConfig(teacher="shorten")


@pytest.mark.parametrize("width", ["0", "-5"])
def test_a_width_below_one_is_refused(invoke, logs_db, width):
    """A negative --width cut every message at its last characters
    (text[:-5]) and printed on, exit 0."""
    before = logs_db.read_bytes()
    out = invoke(["--db", str(logs_db), "logs", "--width", width], code=2).output
    assert f"Invalid value for '--width': {width} is not in the range x>=1" in out
    assert logs_db.read_bytes() == before
