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
        done = {r["item_id"] for r in table.rows_where("run_id = ? and role = 'teacher'", [run.id])}
        todo = [(f"item-{i}", text) for i, text in enumerate(ITEMS) if f"item-{i}" not in done]
        info["skipped"] = len(done)
        for n, (item_id, text) in enumerate(todo):
            if kill_after is not None and n == kill_after:
                raise Killed(f"killed after {n} items")
            (completion,) = backend.generate([GenerationRequest([{"role": "user", "content": text}],
                                                                GenerationParams(max_new_tokens=32))])
            with run.store.db.conn:
                table.insert({"run_id": run.id, "item_id": item_id, "role": "teacher", "model": backend.model_id,
                              "round": 0, "sample": 0, "text": completion.text, "llm_call_id": completion.call_id})
        info["answered"] = len(todo)

    return run.step("answer", body)


def teacher(messages):
    return messages[-1]["content"].replace("instruction", "answer")


def response_table(store, run_id):
    return [
        (r["item_id"], r["role"], r["model"], r["round"], r["sample"], r["text"])
        for r in store["responses"].rows_where("run_id = ?", [run_id], order_by="item_id")
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
