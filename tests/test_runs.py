"""Runs and stages: same config -> same run; done stages are skipped; a
stage cut off halfway resumes with only the items it had not written."""

from __future__ import annotations

import json

import pytest

from fakes import ScriptedBackend
from tapir.cache import CachedBackend
from tapir.roles import GenerationParams, GenerationRequest
from tapir.runs import Run, config_hash, redact
from tapir.store import open_store

CONFIG = {
    "name": "demo",
    "teacher": {"name": "default", "model": {"model": "openai/gpt-4o-mini", "options": {"api_key": "sk-live-secret"}}},
    "student": {"model": "hf:./student", "generation": {"max_new_tokens": 64}},
    "curriculum": {"rounds": 3, "alpha": 0.3},
}


# --- run identity ------------------------------------------------------------------


def test_same_config_same_run_id(store):
    a = Run.start(store, CONFIG)
    b = Run.start(store, json.loads(json.dumps(CONFIG)))  # an equal copy
    assert a.id == b.id
    assert len(a.id) == 16
    assert store["runs"].count == 1


def test_key_order_does_not_change_the_run(store):
    reordered = dict(reversed(list(CONFIG.items())))
    assert Run.start(store, reordered).id == Run.start(store, CONFIG).id


@pytest.mark.parametrize(
    "path, value",
    [
        (("curriculum", "rounds"), 4),
        (("student", "model"), "hf:./other-student"),
        (("student", "generation", "max_new_tokens"), 65),
        (("name",), "demo2"),
    ],
)
def test_different_config_different_run_id(store, path, value):
    changed = json.loads(json.dumps(CONFIG))
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert Run.start(store, changed).id != Run.start(store, CONFIG).id
    assert store["runs"].count == 2


def test_tokenizer_settings_are_not_taken_for_secrets(store):
    # pad_token / eos_token change the run; redacting them merged two runs.
    a = {**CONFIG, "trainer": {"options": {"pad_token": "<pad>"}}}
    b = {**CONFIG, "trainer": {"options": {"pad_token": "<|endoftext|>"}}}
    assert Run.start(store, a).id != Run.start(store, b).id
    assert redact({"eos_token": "x", "max_new_tokens": 5, "tokenizer": "t"}) == {
        "eos_token": "x", "max_new_tokens": 5, "tokenizer": "t"}


def test_api_keys_are_redacted_in_runs_config(store):
    config = {
        **CONFIG,
        "judge": {
            "name": "pairwise",
            "model": {"model": "anthropic/claude", "options": {
                "ANTHROPIC_API_KEY": "sk-ant-abcdefghijklmnopqrstuvwxyz",
                "extra_headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"},
                "hf_token": "hf_abcdefghijklmnopqrstuvwxyz",
                "password": "hunter2",
                "api_base": "http://localhost:8000/v1",
            }},
        },
        # Key-looking values under any name; names that merely start alike stay.
        "extra_keys": ["sk-proj-abcdefghijklmnopqrstuvwxyz0123", "hf_" + "Ab1" * 12, "sk-learn",
                       "hf_internal_testing_tiny_random_llama"],
    }
    run = Run.start(store, config, name="secret-test")
    row = store["runs"].get(run.id)
    text = row["config"]
    for secret in ("sk-live-secret", "sk-ant-abc", "Bearer abc", "hf_abc", "hunter2", "sk-proj-abc"):
        assert secret not in text
    stored = json.loads(text)
    options = stored["judge"]["model"]["options"]
    assert options == {
        "ANTHROPIC_API_KEY": "<redacted>",
        "extra_headers": {"Authorization": "<redacted>"},
        "hf_token": "<redacted>",
        "password": "<redacted>",
        "api_base": "http://localhost:8000/v1",
    }
    assert stored["teacher"]["model"]["options"] == {"api_key": "<redacted>"}
    assert stored["extra_keys"] == ["<redacted>", "<redacted>", "sk-learn", "hf_internal_testing_tiny_random_llama"]
    assert stored["student"] == CONFIG["student"]  # the rest is kept as is
    assert row["config_hash"] == config_hash(config) and run.id == row["config_hash"][:16]
    assert row["name"] == "secret-test"
    assert row["status"] == "running"
    assert row["tapir_version"] == __import__("tapir").__version__


def test_changing_only_the_api_key_keeps_the_run(store):
    other = json.loads(json.dumps(CONFIG))
    other["teacher"]["model"]["options"]["api_key"] = "sk-another-key"
    assert Run.start(store, other).id == Run.start(store, CONFIG).id


def test_finish_and_restart_status(store):
    run = Run.start(store, CONFIG)
    run.finish()
    assert store["runs"].get(run.id)["status"] == "done"
    Run.start(store, CONFIG)
    assert store["runs"].get(run.id)["status"] == "running"
    run.finish("failed")
    assert store["runs"].get(run.id)["status"] == "failed"


# --- stages --------------------------------------------------------------------------


def test_done_stage_is_skipped_on_rerun(store):
    calls = []
    run = Run.start(store, CONFIG)
    assert run.step("seed", lambda info: (calls.append(1), info.update(n=11))) is True
    assert run.is_done("seed")
    rerun = Run.start(store, CONFIG)
    assert rerun.step("seed", lambda info: calls.append(2)) is False
    assert calls == [1]
    (stage,) = rerun.stages()
    assert (stage["name"], stage["round"], stage["status"]) == ("seed", 0, "done")
    assert json.loads(stage["info"]) == {"n": 11}
    assert stage["seconds"] is not None and stage["seconds"] >= 0
    assert stage["started_at"] <= stage["finished_at"]


def test_rounds_are_separate_stages(store):
    run = Run.start(store, CONFIG)
    assert run.step("train", lambda info: None, round=1) is True
    assert run.step("train", lambda info: None, round=2) is True
    assert run.step("train", lambda info: None, round=1) is False
    assert not run.is_done("train", 3)
    assert [(s["name"], s["round"], s["status"]) for s in run.stages()] == [("train", 1, "done"), ("train", 2, "done")]


def test_stages_belong_to_their_run(store):
    a = Run.start(store, CONFIG)
    b = Run.start(store, {**CONFIG, "name": "other"})
    a.step("seed", lambda info: None)
    assert not b.is_done("seed")
    assert b.step("seed", lambda info: None) is True


def test_stage_that_raises_is_failed_and_runs_again(store):
    run = Run.start(store, CONFIG)

    def boom(info):
        info["progress"] = 3
        raise ValueError("judge parse exploded")

    with pytest.raises(ValueError):
        run.step("judge", boom)
    (stage,) = run.stages()
    assert stage["status"] == "failed"
    assert stage["finished_at"] is not None
    info = json.loads(stage["info"])
    assert info == {"progress": 3, "error": "ValueError('judge parse exploded')"}
    assert not run.is_done("judge")

    assert run.step("judge", lambda info: info.update(ok=True)) is True
    (stage,) = run.stages()  # the same row, now done
    assert stage["status"] == "done"
    assert json.loads(stage["info"]) == {"ok": True}
    assert run.step("judge", boom) is False


def test_interrupt_marks_stage_failed(store):
    run = Run.start(store, CONFIG)
    with pytest.raises(KeyboardInterrupt):
        with run.stage("expand", 1):
            raise KeyboardInterrupt
    assert run.stages()[0]["status"] == "failed"


# --- resume of a half-done stage -----------------------------------------------------

ITEMS = [f"instruction {i}" for i in range(10)]


class Killed(Exception):
    pass


def answer_stage(run: Run, backend: CachedBackend, kill_after: int | None = None):
    """A stage in the shape every pipeline stage has: skip the items whose
    row exists, ask the model for the rest, write each row as it comes."""

    def body(info):
        table = run.store["responses"]
        done = {r["item_id"] for r in table.rows_where("scope = ? and role = 'teacher'", [run.id])}
        todo = [(f"item-{i}", text) for i, text in enumerate(ITEMS) if f"item-{i}" not in done]
        info["skipped"] = len(done)
        for n, (item_id, text) in enumerate(todo):
            if kill_after is not None and n == kill_after:
                raise Killed(f"killed after {n} items")
            (completion,) = backend.generate([GenerationRequest([{"role": "user", "content": text}],
                                                                GenerationParams(max_new_tokens=32))])
            with run.store.db.conn:
                table.insert({"scope": run.id, "item_id": item_id, "role": "teacher", "model": backend.model_id,
                              "round": 0, "sample": 0, "text": completion.text, "llm_call_id": completion.call_id})
        info["answered"] = len(todo)

    return run.step("answer", body)


def teacher(messages):
    return messages[-1]["content"].replace("instruction", "answer")


def response_table(store, run_id):
    return [
        (r["item_id"], r["role"], r["model"], r["round"], r["sample"], r["text"])
        for r in store["responses"].rows_where("scope = ?", [run_id], order_by="item_id")
    ]


def test_resume_half_done_stage_processes_only_the_rest(tmp_path):
    path = tmp_path / "resume.db"
    first_backend = ScriptedBackend(teacher, model_id="teacher-model")
    store = open_store(path)
    run = Run.start(store, CONFIG)
    with pytest.raises(Killed):
        answer_stage(run, CachedBackend(first_backend, store, run.id), kill_after=4)
    assert len(first_backend.requests) == 4
    assert store["responses"].count == 4
    assert run.stages()[0]["status"] == "failed"
    store.close()  # the process died

    store = open_store(path)  # a new process, same config
    run = Run.start(store, CONFIG)
    second_backend = ScriptedBackend(teacher, model_id="teacher-model")
    cached = CachedBackend(second_backend, store, run.id)
    assert answer_stage(run, cached) is True
    assert [r.messages[0]["content"] for r in second_backend.requests] == ITEMS[4:]  # only the remaining 6
    assert (cached.calls_made, cached.hits) == (6, 0)  # finished items were not even asked again
    (stage,) = run.stages()
    assert stage["status"] == "done"
    assert json.loads(stage["info"]) == {"skipped": 4, "answered": 6}
    assert store["llm_calls"].count == 10

    # A third run does nothing at all.
    third = ScriptedBackend(teacher, model_id="teacher-model")
    assert answer_stage(Run.start(store, CONFIG), CachedBackend(third, store, run.id)) is False
    assert third.requests == []

    resumed = response_table(store, run.id)
    store.close()

    # The same stage, uninterrupted, in a fresh database: the same table.
    clean = open_store(tmp_path / "clean.db")
    clean_run = Run.start(clean, CONFIG)
    clean_backend = ScriptedBackend(teacher, model_id="teacher-model")
    assert answer_stage(clean_run, CachedBackend(clean_backend, clean, clean_run.id)) is True
    assert len(clean_backend.requests) == 10
    assert clean_run.id == run.id
    assert response_table(clean, clean_run.id) == resumed
    assert len(resumed) == 10
    assert resumed[0] == ("item-0", "teacher", "teacher-model", 0, 0, "answer 0")
    clean.close()


# --- one grammar for a run on the command line ---------------------------------------------------


@pytest.fixture
def runs_db(tmp_path):
    """Three runs: two whose ids share the prefix 'abcd12', one named 'beta'
    twice (its latest run wins), with a train and an export stage."""
    path = tmp_path / "runs.db"
    store = open_store(path)
    store["runs"].insert_all([
        {"id": "abcd1234aaaa0000", "name": "alpha", "status": "done", "created_at": "2026-01-01T00:00:00Z",
         "updated_at": "2026-01-01T00:00:00Z", "config": "{}"},
        {"id": "abcd12ffbbbb0000", "name": "beta", "status": "done", "created_at": "2026-01-02T00:00:00Z",
         "updated_at": "2026-01-02T00:00:00Z", "config": "{}"},
        {"id": "ef01000000000000", "name": "beta", "status": "done", "created_at": "2026-01-03T00:00:00Z",
         "updated_at": "2026-01-03T00:00:00Z", "config": "{}"},
    ])
    run = Run(store, "abcd1234aaaa0000", "alpha")
    run.mark_stage("teacher_answers", 0, "k-teacher", "done", {"ok": 8, "failed": 1, "calls": 9}, 1.0)
    run.mark_stage("train", 0, "k-train0", "done", {"examples": 12, "path": "/ckpt/s0"}, 2.0)
    run.mark_stage("export", 0, "k-export", "done", {"rows": 20, "jsonl": "/out/data.jsonl"}, 0.1)
    store.close()
    return path


@pytest.fixture
def run_cli(cli):
    """``run_cli(args, code=0)``: the CLI's result, its exit code checked."""
    from click.testing import CliRunner

    def invoke(args, code=0):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_resolve_run_takes_id_name_or_unique_prefix(runs_db):
    from tapir.runs import resolve_run

    store = open_store(runs_db, readonly=True)
    assert resolve_run(store, "abcd1234aaaa0000") == "abcd1234aaaa0000"  # id
    assert resolve_run(store, "alpha") == "abcd1234aaaa0000"  # name
    assert resolve_run(store, "beta") == "ef01000000000000"  # a name run twice: the latest run of it
    assert resolve_run(store, "abcd1234") == "abcd1234aaaa0000"  # unique prefix
    assert resolve_run(store, "ef01") == "ef01000000000000"


def test_resolve_run_unknown_or_ambiguous_is_one_message_listing_candidates(runs_db):
    from tapir.errors import ConfigError
    from tapir.runs import resolve_run

    store = open_store(runs_db, readonly=True)
    with pytest.raises(ConfigError) as ambiguous:
        resolve_run(store, "abcd12")
    assert str(ambiguous.value) == (
        f"run 'abcd12' is ambiguous in {runs_db}: it starts 2 run ids: abcd12ffbbbb0000 (beta), "
        f"abcd1234aaaa0000 (alpha). Give more characters of the id, or the run's name")
    with pytest.raises(ConfigError) as unknown:
        resolve_run(store, "gamma")
    assert str(unknown.value) == (
        f"no run 'gamma' in {runs_db}: not a run id, id prefix or name. Recent runs: ef01000000000000 (beta), "
        f"abcd12ffbbbb0000 (beta), abcd1234aaaa0000 (alpha) (`tapir runs` lists them)")
    with pytest.raises(ConfigError, match=r"an id prefix needs 4\+ characters"):
        resolve_run(store, "abc")  # too short to be read as a prefix
    with pytest.raises(ConfigError, match="no run 'abcd%'"):
        resolve_run(store, "abcd%")  # LIKE wildcards are taken literally
    assert unknown.value.exit_code == 2


@pytest.mark.parametrize("ref", ["abcd1234aaaa0000", "abcd1234", "alpha"])
def test_every_command_that_takes_a_run_reads_it_the_same(run_cli, runs_db, tmp_path, ref):
    db = ["--db", str(runs_db)]
    assert "run abcd1234aaaa0000 (alpha): done" in run_cli([*db, "runs", "show", ref]).output
    assert run_cli([*db, "logs", "--run", ref]).output == f"no calls match in {runs_db}\n"
    out = tmp_path / "r.html"
    assert run_cli([*db, "report", ref, "-o", str(out)]).output == f"report: {out}\n"
    assert "abcd1234aaaa0000" in out.read_text()


@pytest.mark.parametrize("ref, message", [
    ("abcd12", "run 'abcd12' is ambiguous"),
    ("gamma", "no run 'gamma'"),
])
def test_an_unknown_or_ambiguous_run_is_the_same_error_everywhere(run_cli, runs_db, tmp_path, ref, message):
    db = ["--db", str(runs_db)]
    outputs = [run_cli([*db, *args], code=2).output for args in (
        ["runs", "show", ref], ["logs", "--run", ref], ["report", ref, "-o", str(tmp_path / "r.html")])]
    assert outputs[0].startswith(f"Error: {message}") and outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count("\n") == 1  # one message, one line
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_a_db_that_is_a_folder_or_missing_is_exit_2_with_one_message_everywhere(run_cli, tmp_path, kind):
    target = tmp_path / "dbdir" if kind == "folder" else tmp_path / "none.db"
    if kind == "folder":
        target.mkdir()
    expected = (f"Error: --db {target} is a folder, not a database file (set by --db, TAPIR_DB or the config's db:). "
                f"Give a file path, e.g. {target}/tapir.db\n" if kind == "folder"
                else f"Error: no database at {target} (pass --db PATH or set TAPIR_DB)\n")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"name": "c", "data": {"path": "d.jsonl"}, "teacher": {"name": "default"},
                                  "student": {"model": "hf:./s"}, "judge": {"name": "student-loss"},
                                  "classifier": {"name": "centroid"}}))
    for args in (["runs"], ["runs", "show", "x"], ["logs"], ["logs", "--run", "x"], ["report", "x"],
                 ["mfd", str(config)], ["compare"]):
        assert run_cli(["--db", str(target), *args], code=2).output == expected, args
    assert list(tmp_path.rglob("*.db")) == []


def test_the_stage_table_counts_what_train_and_export_handled(run_cli, runs_db):
    out = run_cli(["--db", str(runs_db), "runs", "show", "alpha"]).output.splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.split() and line.split()[0] in
            ("teacher_answers", "train", "export")}
    # stage, round, status, ok, failed, ...
    assert rows["teacher_answers"][3:5] == ["8", "1"]
    assert rows["train"][3:5] == ["12", "0"]  # examples trained on, not "0 ok"
    assert rows["export"][3:5] == ["20", "0"]  # rows exported
    assert "ok counts items (for train: examples trained on; export: rows exported)" in out


def test_a_real_runs_stage_table_counts_train_examples_and_export_rows(tmp_path, tiny_model, register_plugin,
                                                                       monkeypatch, run_cli):
    """distill's summary and `runs show` of a run: train's ok is the examples
    it trained on, export's the rows it wrote; no stage that worked shows 0."""
    from pipeline_helpers import ScriptPlugin, SpyPlugin, SpyTrainer, write_config

    from tapir.cli.distill_cmd import stage_table, summary_rows
    from tapir.pipeline.runner import distill

    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    SpyTrainer.seen = []
    monkeypatch.setenv("TAPIR_QUIET", "1")
    cfg = write_config(tmp_path, tiny_model, curriculum={"rounds": 1, "expand_per_round": [4]})
    out = distill(cfg, str(tmp_path / "t.db"))
    rows = {(r["name"], r["round"]): r for r in summary_rows(out.results)}
    for r in (0, 1):
        assert rows[("train", r)]["ok"] == out.info("train", r)["examples"] == len(SpyTrainer.seen[r][1]) > 0
    assert rows[("export", 0)]["ok"] == out.info("export", 0)["rows"] > 0
    assert [node for node, row in rows.items() if row["ok"] == 0] == []
    summary = stage_table(list(rows.values()))
    out.store.close()
    shown = run_cli(["--db", str(tmp_path / "t.db"), "runs", "show", out.run.id]).output.splitlines()
    for line in summary[1:-2]:  # the stage lines (their seconds differ: the summary's are measured here)
        assert any(s.split()[:-1] == line.split()[:-1] for s in shown), (line, shown)
