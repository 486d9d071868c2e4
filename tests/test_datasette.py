"""The database as datasette shows it: the views return the right rows on a
small pipeline run (one round, a scripted teacher that cuts some answers at
max_new_tokens), the call log says what each call was for, the shipped
metadata describes every table, view and column, and a real headless
browser sees the hard_items view served by datasette."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pipeline_helpers import ScriptTeacher, write_config

from tapir import hookimpl
from tapir.roles import Completion

LABELS = ("Math", "Writing", "Reasoning", "Code Generation")


def _cut(text: str) -> bool:
    """Which teacher answers the scripted teacher 'cuts at max_new_tokens'."""
    return hashlib.sha256(text.encode()).digest()[0] % 4 == 0


class CuttingTeacher(ScriptTeacher):
    """ScriptTeacher whose answers to some plain questions stop at the token limit."""

    def __init__(self, name: str, options=None):  # options: the registry's validated (empty) options
        self.model_id = f"script:{name}"

    def generate(self, requests, on_result=None):
        def mark(i, c: Completion):
            text = requests[i].messages[-1]["content"]
            if not text.startswith(("You write new tasks", "Act as an Instruction Creator")) and _cut(text):
                c.finish_reason = "length"
            else:
                c.finish_reason = "stop"
            if on_result:
                on_result(i, c)

        out = super().generate(requests, on_result=mark)
        return out


class FixedClassifier:
    """A task type from a hash of the text (no model to load)."""

    labels = list(LABELS)
    needs_model = False

    def __init__(self, backend, options=None):
        pass

    def classify(self, texts):
        return [(LABELS[hashlib.sha256(t.encode()).digest()[0] % len(LABELS)], 0.9) for t in texts]


class ViewsPlugin:
    @hookimpl
    def register_backends(self, register):
        register("script", CuttingTeacher, description="test teacher that cuts some answers")

    @hookimpl
    def register_classifiers(self, register):
        register("test-fixed", FixedClassifier)


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, tiny_model):
    from tapir.plugins import get_plugin_manager, reset_plugin_manager
    from tapir.pipeline.runner import distill

    tmp = tmp_path_factory.mktemp("views")
    reset_plugin_manager()
    get_plugin_manager().register(ViewsPlugin(), name="test-views")
    mp = pytest.MonkeyPatch()
    mp.setenv("TAPIR_QUIET", "1")
    try:
        cfg = write_config(
            tmp, tiny_model,
            trainer={"name": "hf", "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8,
                                               "max_length": 96, "lr": 1e-3}},
            classifier={"name": "test-fixed"},
            curriculum={"rounds": 1, "alpha": 0.3, "alpha_step": 0.2, "expand_per_round": [4]},
        )
        out = distill(cfg, str(tmp / "tapir.db"))
        yield out, tmp / "tapir.db"
        out.store.close()
    finally:
        mp.undo()
        reset_plugin_manager()


def rows(db_path, sql, params=()):
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_hard_items_view_joins_the_run_stages(run_db):
    out, db = run_db
    hard = {i for i, v in out.scores("seed_cut", 0, "hard").items() if v == 1.0}
    assert len(hard) == 8
    view = rows(db, "select * from hard_items where run_id = ? order by item_id", [out.ctx.run.id])
    assert {r["item_id"] for r in view} == hard
    items = {r["id"]: r for r in rows(db, "select * from items where scope = ?", [out.key("ingest")])}
    teacher = {r["item_id"]: r["text"] for r in rows(db, "select item_id, text from responses where scope = ?",
                                                     [out.key("teacher_answers")])}
    student = {r["item_id"]: r["text"] for r in rows(db, "select item_id, text from responses where scope = ?",
                                                     [out.key("student_answers")])}
    mfd = out.scores("judge", 0, "mfd")
    labels = {r["item_id"]: r["label"] for r in rows(db, "select item_id, label from classifications "
                                                         "where scope = ?", [out.key("classify")])}
    for r in view:
        i = r["item_id"]
        assert r["instruction"] == items[i]["instruction"]
        assert r["teacher_answer"] == teacher[i]
        assert r["student_answer"] == student[i]
        assert r["mfd"] == pytest.approx(mfd[i])
        assert r["teacher_score"] - r["student_score"] == pytest.approx(mfd[i])
        assert r["task_type"] == labels[i]
        assert r["judge_raw"].startswith("single: ") and "rouge" in r["judge_raw"]
    # hard means the top half by MFD
    assert min(r["mfd"] for r in view) >= max(v for i, v in mfd.items() if i not in hard)


def test_item_outcomes_and_stage_summary(run_db):
    out, db = run_db
    outcomes = rows(db, "select * from item_outcomes where run_id = ?", [out.ctx.run.id])
    by_stage = {}
    for r in outcomes:
        by_stage.setdefault((r["stage"], r["round"]), []).append(r)
    assert len(by_stage[("teacher_answers", 0)]) == 16
    assert all(r["status"] == "ok" for r in outcomes)
    direct = rows(db, "select count(*) as n from outcomes where scope in "
                      "(select key from stages where run_id = ?)", [out.ctx.run.id])[0]["n"]
    assert len(outcomes) == direct
    summary = {(r["stage"], r["round"]): r for r in rows(db, "select * from stage_summary where run_id = ?",
                                                         [out.ctx.run.id])}
    result = {(r.step.stage, r.step.round): r for r in out.results}
    assert set(summary) == set(result)
    for node, r in result.items():
        assert summary[node]["ok"] == r.ok
        assert summary[node]["calls"] == r.calls
        assert summary[node]["truncated"] == r.truncated


def test_call_log_has_role_stage_round_item_and_finish_reason(run_db):
    out, db = run_db
    calls = rows(db, "select * from llm_calls where stage_key = ?", [out.key("teacher_answers")])
    assert len(calls) == 16
    items = {r["id"] for r in rows(db, "select id from items where scope = ?", [out.key("ingest")])}
    assert {c["item_id"] for c in calls} == items
    assert {c["role"] for c in calls} == {"teacher"} and {c["round"] for c in calls} == {0}
    cut = [c for c in calls if _cut(json.loads(c["messages"])[-1]["content"])]
    assert cut, "the scripted teacher should cut at least one of 16 answers"
    assert {c["id"] for c in calls if c["finish_reason"] == "length"} == {c["id"] for c in cut}
    # flag (default): truncated answers are kept, counted and said
    stage = next(r for r in out.results if (r.step.stage, r.step.round) == ("teacher_answers", 0))
    assert stage.truncated == len(cut)
    assert stage.info["truncated_answers"] == len(cut) and stage.info["on_truncated"] == "flag"
    assert len(rows(db, "select 1 from responses where scope = ?", [out.key("teacher_answers")])) == 16
    # the rewriter's calls are tagged too
    rw = rows(db, "select * from llm_calls where stage_key = ? and role = 'rewriter'", [out.key("rewrite", 1)])
    assert rw and all(c["item_id"] for c in rw) and {c["round"] for c in rw} == {1}
    # student calls: each its own latency share, summing to about the stage's generation time
    st = rows(db, "select latency_s from llm_calls where stage_key = ?", [out.key("student_answers")])
    student_stage = next(r for r in out.results if r.step.stage == "student_answers")
    assert sum(c["latency_s"] for c in st) <= student_stage.seconds + 0.05


def test_calls_by_role_and_by_stage(run_db):
    out, db = run_db
    run = out.ctx.run.id
    by_role = {r["role"]: r for r in rows(db, "select * from calls_by_role where run_id = ?", [run])}
    direct = rows(db, "select role, count(*) as n, sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) "
                      "as t, sum(finish_reason = 'length') as cut from llm_calls where run_id = ? group by role",
                  [run])
    assert set(by_role) == {"teacher", "rewriter", "student"}
    for d in direct:
        assert by_role[d["role"]]["calls"] == d["n"]
        assert by_role[d["role"]]["tokens"] == d["t"]
        assert by_role[d["role"]]["truncated"] == d["cut"]
        assert by_role[d["role"]]["errors"] == 0
    by_stage = rows(db, "select * from calls_by_stage where run_id = ?", [run])
    assert sum(r["calls"] for r in by_stage) == sum(r["calls"] for r in by_role.values())
    teacher0 = [r for r in by_stage if (r["stage"], r["round"], r["role"]) == ("teacher_answers", 0, "teacher")]
    assert teacher0[0]["calls"] == 16


def test_benchmark_scores_view(run_db):
    out, db = run_db
    store = out.store
    with store.db.conn:
        store["benchmark_results"].insert_all([
            {"benchmark": "mtbench", "model": "m1", "task": "overall", "metric": "score", "value": 6.5, "n": 160,
             "run_id": "bench1", "meta": json.dumps({"judge": "openai/gpt-4", "failures": 2, "judge_mode": "reference",
                                                     "subset": None, "data_version": "abc"})},
            {"benchmark": "lmeval", "model": "m1", "task": "arc", "metric": "acc", "value": 0.4, "n": 100,
             "run_id": "bench2", "meta": "not json"},
        ])
    got = {r["benchmark"]: r for r in rows(db, "select * from benchmark_scores")}
    assert got["mtbench"]["judge"] == "openai/gpt-4" and got["mtbench"]["failures"] == 2
    assert got["mtbench"]["value"] == 6.5 and got["mtbench"]["run_id"] == "bench1"
    assert got["lmeval"]["judge"] is None and got["lmeval"]["value"] == 0.4  # bad meta: NULLs, not an error


def test_item_history_gathers_an_item(run_db):
    out, db = run_db
    item = next(iter(out.scores("seed_cut", 0, "hard")))
    hist = rows(db, "select * from item_history where run_id = ? and item_id = ?", [out.ctx.run.id, item])
    whats = {r["what"] for r in hist}
    assert {"item (seed)", "teacher answer", "student answer", "mfd", "hard", "task type",
            "outcome ok"} <= whats


def test_judgments_link_to_responses(run_db):
    out, db = run_db
    bad = rows(db, "select j.id from judgments j left join responses r on r.id = j.response_a_id "
                   "where r.id is null")
    assert bad == []
    fks = rows(db, "select * from pragma_foreign_key_list('judgments')")
    assert {(f["from"], f["table"]) for f in fks} == {("response_a_id", "responses"), ("response_b_id", "responses"),
                                                      ("item_uid", "items")}


def test_every_row_about_an_item_links_to_it(run_db):
    """A fresh pipeline run: the triggers fill item_uid for every row the
    stages wrote, and each link names the item of that id in the run."""
    out, db = run_db
    assert rows(db, "select * from pragma_foreign_key_check") == []
    for table in ("responses", "judgments", "scores", "classifications", "rewrites"):
        unlinked = rows(db, f"select item_id from {table} where item_uid is null")
        assert unlinked == [], table
        wrong = rows(db, f"select t.item_id from {table} t join items i on i.uid = t.item_uid where i.id != t.item_id")
        assert wrong == [], table
    teacher = rows(db, "select r.item_id, i.scope from responses r join items i on i.uid = r.item_uid "
                       "where r.scope = ?", [out.key("teacher_answers")])
    assert len(teacher) == 16 and {r["scope"] for r in teacher} == {out.key("ingest")}


# --- the shipped metadata ----------------------------------------------------


def test_metadata_describes_every_table_view_and_column(tmp_path):
    from tapir.datasette import metadata_for, metadata_path
    from tapir.store import open_store

    assert metadata_path().is_file()
    data = yaml.safe_load(metadata_path().read_text())
    tables = data["databases"]["tapir"]["tables"]
    store = open_store(memory=True)
    names = set(store.db.table_names()) | set(store.db.view_names())
    assert set(tables) == names
    for view in store.db.view_names():
        columns = {c.name for c in store.db[view].columns}
        assert set(tables[view]["columns"]) == columns, view  # every view column described
    for name, meta in tables.items():
        columns = {c.name for c in store.db[name].columns}
        assert set(meta.get("columns", {})) <= columns, name
        assert set(meta.get("facets", [])) <= columns, name
    assert list(metadata_for(tmp_path / "demo.db")["databases"]) == ["demo"]


def test_datasette_metadata_command(tmp_path, monkeypatch):
    from tapir.cli import _add_commands, cli
    from tapir.datasette import metadata_path

    monkeypatch.chdir(tmp_path)
    _add_commands()
    res = CliRunner().invoke(cli, ["datasette-metadata"])
    assert res.exit_code == 0 and res.output.strip() == str(metadata_path())
    res = CliRunner().invoke(cli, ["datasette-metadata", "--db", "runs/demo.db", "--yaml"])
    assert res.exit_code == 0
    assert list(yaml.safe_load(res.output)["databases"]) == ["demo"]
    assert not (tmp_path / "runs").exists()


def test_package_ships_the_metadata():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["*"]
    assert (Path(__file__).resolve().parents[1] / "tapir" / "datasette" / "__init__.py").is_file()


# --- a real browser ------------------------------------------------------------


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hard_items_in_a_headless_browser(run_db, tmp_path):
    pytest.importorskip("datasette", reason="datasette is not installed (pip install -e '.[test]')")
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium / chrome installed (apt-get install -y chromium)")
    from tapir.datasette import metadata_path

    out, db = run_db
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(db), "-m", str(metadata_path()), "-h", "127.0.0.1",
         "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/-/versions.json", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("datasette did not start: " + (server.stdout.read().decode() if server.poll()
                                                              is not None else "timeout"))
                time.sleep(0.3)
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", f"{base}/tapir/hard_items"],
            capture_output=True, text=True, timeout=90).stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    hard = sorted(i for i, v in out.scores("seed_cut", 0, "hard").items() if v == 1.0)
    assert "hard_items (view)" in dom
    assert f"{len(hard)} rows" in dom
    for item in hard:
        assert f">{item}<" in dom
    assert "The seed set D_S" in dom  # the view's description from the metadata
    assert "Model fitting difficulty" in dom  # a column description
