"""Runs that heal and say what failed (issue: trustworthy runs), against
local OpenAI-compatible servers and the tiny model:

* an edited seed cut reuses every stage it does not touch;
* 401 on every call (permanent: the stage stops at once), then a fixed key: the re-run sends only what failed;
* the judge endpoint down: the circuit breaker exits 1 naming the stage; back up: the re-run completes;
* 20% 429/500, timeouts and malformed replies: after re-runs, the same tables as a fault-free run;
* two processes on one run: one exits with the lock message; a killed holder is taken over;
* two configs on one database at once: no call paid twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils
import yaml
from pipeline_helpers import api_config, server_reply, snapshot
from tapir_testing.openai_server import Faults, OpenAIServer

from tapir.pipeline.engine import StageFailed

TESTS = Path(__file__).resolve().parent
API = "model like 'litellm:%'"  # calls to the local servers (the student's local calls are logged too)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.setenv("TAPIR_TEST_KEY", "sk-test-not-a-real-key-000000")


def distill(cfg, db, **kw):
    from tapir.pipeline.runner import distill as run

    return run(cfg, str(db), **kw)


def keyed_rows(db_path: Path, keys) -> dict:
    db = sqlite_utils.Database(db_path)
    marks = ",".join("?" * len(keys))
    return {t: sorted(map(tuple, db.execute(f"select * from {t} where scope in ({marks})", list(keys)).fetchall()))
            for t in ("items", "responses", "judgments", "scores", "checkpoints", "rewrites", "classifications")}


def test_edited_seed_cut_reuses_what_it_does_not_touch(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        db = tmp_path / "t.db"
        first = distill(cfg, db)
        old_keys = {r.step.node: r.key for r in first.results}
        before = keyed_rows(db, list(old_keys.values()))
        sent = srv.requests
        last_call = sqlite_utils.Database(db).execute("select max(id) from llm_calls").fetchone()[0]

        data = yaml.safe_load(cfg.read_text())
        data["mfd"] = {"delta": None, "top_fraction": 0.25}
        cfg.write_text(yaml.safe_dump(data))
        second = distill(cfg, db)
    status = {r.step.node: r.status for r in second.results}
    for node in (("ingest", 0), ("teacher_answers", 0), ("train", 0), ("student_answers", 0), ("judge", 0),
                 ("classify", 0)):
        assert status[node] == "reused", node
        assert second.key(*node) == old_keys[node]
    for node in (("seed_cut", 0), ("resample", 1), ("expand", 1), ("rewrite", 1), ("train", 1)):
        assert status[node] == "done", node
        assert second.key(*node) != old_keys[node]
    # No call for the reused stages, no S0 training, new checkpoints apart from the old ones.
    store = second.store
    reused_keys = [second.key(*n) for n, s in status.items() if s == "reused"]
    marks = ",".join("?" * len(reused_keys))
    assert store.execute(f"select count(*) from llm_calls where id > ? and stage_key in ({marks})",
                         [last_call, *reused_keys]).fetchone()[0] == 0
    assert second.info("train", 0)["path"] == first.info("train", 0)["path"]
    assert second.info("train", 1)["path"] != first.info("train", 1)["path"]
    assert Path(first.info("train", 1)["path"]).is_dir() and Path(second.info("train", 1)["path"]).is_dir()
    assert second.info("seed_cut")["hard"] == 2 and first.info("seed_cut")["hard"] == 4
    # The old run's rows are untouched; calls were made only by the new stages.
    assert keyed_rows(db, list(old_keys.values())) == before
    new_calls = store.execute("select count(*) from llm_calls where id > ?", [last_call]).fetchone()[0]
    assert srv.requests - sent == new_calls > 0

    # `tapir mfd` shows the edited config's distribution: same judge stage.
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli

    _add_commands()
    result = CliRunner().invoke(cli, ["--db", str(db), "mfd", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stage_key"] == old_keys[("judge", 0)]


def test_401_everywhere_then_fixed_key_sends_only_what_failed(tmp_path, tiny_model):
    state = {"broken": True}
    with OpenAIServer(reply=server_reply, faults=lambda i, body: "401" if state["broken"] else None) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        db = tmp_path / "t.db"
        with pytest.raises(StageFailed) as err:
            distill(cfg, db)
        message = str(err.value)
        # A refused key is permanent: the stage stops at the first answers (concurrency 4), not item by item.
        assert "stage teacher_answers stopped: the provider refused the API key (auth, HTTP 401)" in message
        assert "Fix: check the key" in message
        store = sqlite_utils.Database(db)
        assert store.execute("select status from runs").fetchone()[0] == "failed"
        failed = store.execute("select count(*) from outcomes where status = 'failed'").fetchone()[0]
        assert 1 <= failed <= 4 and srv.requests <= 4
        assert store.execute("select count(*) from llm_calls where error is null").fetchone()[0] == 0
        first_requests = srv.requests

        state["broken"] = False
        done = distill(cfg, db)
        assert all(r.failed == 0 for r in done.results)
        assert done.run.store.execute("select status from runs").fetchone()[0] == "done"
        ok_calls = done.store.execute(f"select count(*) from llm_calls where error is null and {API}").fetchone()[0]
        # The re-run sent each call once: the 8 that had failed plus the rest of the pipeline.
        assert srv.requests - first_requests == ok_calls
        teacher_r0 = done.store.execute("select count(*) from llm_calls where error is null and stage_key = ?",
                                        [done.key("teacher_answers", 0)]).fetchone()[0]
        assert teacher_r0 == 8


def test_judge_down_exits_1_and_heals_when_back(tmp_path, tiny_model):
    state = {"down": True}
    with OpenAIServer(reply=server_reply) as teacher, OpenAIServer(
        reply=server_reply, faults=lambda i, body: "503" if state["down"] else None
    ) as judge:
        cfg = api_config(tmp_path, tiny_model, teacher.base_url, judge.base_url)
        db = tmp_path / "t.db"
        from click.testing import CliRunner

        from tapir.cli import _add_commands, cli

        _add_commands()
        result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
        assert result.exit_code == 1, result.output
        # The circuit breaker (failures.circuit_breaker, 5): the same failure 5 times in a row stops the stage.
        assert "stage judge stopped: 5 calls in a row failed the same way" in result.output
        assert "finished" not in result.output
        store = sqlite_utils.Database(db)
        stage = store.execute("select status, info from stages where name = 'judge'").fetchone()
        assert stage[0] == "failed" and "5 calls in a row" in json.loads(stage[1])["error"]
        # No item is trained as easy or hard while unjudged.
        assert store.execute("select count(*) from stages where name = 'train' and round = 1").fetchone()[0] == 0
        teacher_sent = teacher.requests

        state["down"] = False
        result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
        assert result.exit_code == 0, result.output
        assert "finished." in result.output
        # The teacher's answers were reused: only the new round's work reached the teacher.
        reused = store.execute("select count(*) from stages where name = 'teacher_answers' and round = 0 "
                               "and status = 'done'").fetchone()[0]
        assert reused == 1
        calls_round0 = store.execute(
            "select count(*) from llm_calls where role = 'teacher' and round = 0").fetchone()[0]
        assert calls_round0 == 8 and teacher.requests > teacher_sent


def test_faulty_api_heals_to_the_tables_of_a_clean_run(tmp_path, tiny_model):
    clean_dir, faulty_dir = tmp_path / "clean", tmp_path / "faulty"
    clean_dir.mkdir()
    faulty_dir.mkdir()
    with OpenAIServer(reply=server_reply) as srv:
        distill(api_config(clean_dir, tiny_model, srv.base_url), clean_dir / "t.db")
    faults = Faults(rates={"429": 0.1, "500": 0.1, "slow": 0.05, "malformed": 0.05}, seed=3)
    faults.retry_after = 0
    faults.slow_seconds = 3.0
    runs = 0
    with OpenAIServer(reply=server_reply, faults=faults) as srv:
        cfg = api_config(faulty_dir, tiny_model, srv.base_url)
        while True:
            runs += 1
            try:
                out = distill(cfg, faulty_dir / "t.db")
            except StageFailed:
                assert runs < 8, "still failing after 8 runs"
                continue
            if all(r.failed == 0 for r in out.results):
                break
            assert runs < 8
        injected = sum(srv.faults_injected.values())
    assert injected > 0
    clean, healed = snapshot(clean_dir / "t.db"), snapshot(faulty_dir / "t.db")
    for table in clean:
        assert healed[table] == clean[table], table
    assert {status for _, status in healed["outcomes"]} == {"ok"}


SCRIPT = """
import sys
from tapir.pipeline.runner import distill
distill(sys.argv[1], sys.argv[2], wait=len(sys.argv) > 3)
"""


def _spawn(cfg, db, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS / "support"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg), str(db), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(db: Path, prefix: str, timeout: float = 120.0) -> tuple:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                row = sqlite_utils.Database(db).execute(
                    "select name, pid from locks where name like ?", [prefix + "%"]).fetchone()
            except Exception:  # the schema may not be there yet
                row = None
            if row:
                return row
        time.sleep(0.1)
    raise AssertionError("no lock taken")


def test_second_process_on_a_run_exits_and_a_dead_holder_is_taken_over(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply, latency=0.4) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        db = tmp_path / "t.db"
        holder = _spawn(cfg, db)
        _, pid = _wait_for_lock(db, "run:")
        _wait_for_lock(db, "call:")  # the holder is paying for calls now
        before = srv.requests
        second = subprocess.run(
            [sys.executable, "-m", "tapir", "--db", str(db), "distill", str(cfg)], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS / "support")])}, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"is being written by pid {pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        os.kill(pid, signal.SIGKILL)
        holder.wait(timeout=30)
        in_flight_at_kill = srv.requests - before + 4  # the second process sent nothing; at most 4 were open
        taker = _spawn(cfg, db)
        out, err = taker.communicate(timeout=600)
        assert taker.returncode == 0, err[-3000:]
    store = sqlite_utils.Database(db)
    assert store.execute("select status from runs").fetchone()[0] == "done"
    assert store.execute("select count(*) from locks").fetchone()[0] == 0
    ok_calls = store.execute(f"select count(*) from llm_calls where error is null and {API}").fetchone()[0]
    # Every call answered once; only calls in flight at the kill could have been sent twice.
    assert ok_calls <= srv.requests <= ok_calls + in_flight_at_kill


def test_two_configs_on_one_database_pay_no_call_twice(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply, latency=0.05) as srv:
        a = api_config(tmp_path, tiny_model, srv.base_url, name="a.yaml")
        b = api_config(tmp_path, tiny_model, srv.base_url, name="b.yaml", mfd={"delta": None, "top_fraction": 0.25})
        db = tmp_path / "t.db"
        procs = [_spawn(a, db), _spawn(b, db)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
    store = sqlite_utils.Database(db)
    assert store.execute("select count(*) from runs where status = 'done'").fetchone()[0] == 2
    distinct = store.execute(f"select count(distinct key) from llm_calls where error is null and {API}").fetchone()[0]
    assert srv.requests == distinct  # no call paid twice
    assert store.execute(f"select count(*) from llm_calls where {API}").fetchone()[0] == distinct
