"""Table 5's ablations as pipeline variants, and several students in one
config: shared stages run once, each setting ends with its own checkpoint
and held-out loss, and one table compares them."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, ScriptTeacher, write_config


@pytest.fixture
def cli_plugins():
    return [(ScriptPlugin(), "test-script")]


def _config(tmp_path, tiny_model, **extra):
    return write_config(
        tmp_path, tiny_model, judge={"name": "student-loss"},
        trainer={"name": "hf", "options": {"max_steps": 1, "per_device_train_batch_size": 8, "max_length": 64,
                                           "learning_rate": 1e-3}},
        curriculum={"rounds": 2, "expand_per_round": [2, 2]},
        evaluation={"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 4}}, **extra)


def test_ablate_runs_table5_sharing_stages(tmp_path, tiny_model, cli):
    import sqlite_utils

    cfg = _config(tmp_path, tiny_model)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "ablate", str(cfg)])
    assert result.exit_code == 0, result.output
    out = result.output
    for setting in ("full-alpaca", "seed-alpaca", "seed-alpaca-rw", "direct-expansion", "single-round", "full"):
        assert any(line.startswith(setting + " ") for line in out.splitlines()), setting
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert [r["setting"] for r in rows][0] == "full-alpaca" and len(rows) == 6
    assert all(r["heldout_nll"] is not None for r in rows)
    store = sqlite_utils.Database(db)
    # S0, the teacher's answers and the judgments were computed once for all six settings.
    for stage in ("teacher_answers", "judge", "classify"):
        keys = {r[0] for r in store.execute("select key from stages where name = ? and round = 0", [stage])}
        assert len(keys) == 1, stage
    trained = store.execute("select count(distinct key) from stages where name = 'train' and round = 0").fetchone()
    assert trained[0] == 1
    assert rows[0]["checkpoint"] == store.execute(
        "select json_extract(info, '$.path') from stages where name = 'train' and round = 0").fetchone()[0]
    # Seed Alpaca trains round 1 from the base model on D_S only; the full setting from S0 on more.
    infos = {name: json.loads(info) for name, info in store.execute(
        "select r.name, s.info from stages s join runs r on r.id = s.run_id where s.name = 'train' and s.round = 1")}
    seed = infos["tiny-pipeline/ablation:seed-alpaca"]
    full = infos["tiny-pipeline/ablation:full"]
    # alpha 1: the easy rows would weigh 0, so they are not in the training set (no steps for nothing).
    assert seed["hard_examples"] == 8 and seed["easy_examples"] == 0 and seed["alpha"] == 1.0
    assert seed["examples"] == 8 and seed["zero_weight_left_out"] == 8
    assert full["coverage"]["available"] == full["coverage"]["used"] == 8 + 2
    assert store.execute("select count(distinct run_id) from stages").fetchone()[0] == 6
    # Each row says what the setting trained: examples, optimizer steps and tokens of its own rounds.
    by = {r["setting"]: r for r in rows}
    train_info = {name.split(":")[-1]: [json.loads(i) for (i,) in store.execute(
        "select s.info from stages s join runs r on r.id = s.run_id where r.name = ? and s.name = 'train' "
        "and s.round >= 1 order by s.round", [name])] for name in {
        n for (n,) in store.execute("select name from runs")}}
    for setting in ("seed-alpaca", "direct-expansion", "single-round", "full"):
        for key in ("examples", "steps", "tokens"):
            stored = "train_tokens" if key == "tokens" else key
            assert by[setting][key] == sum(i[stored] for i in train_info[setting]) > 0, (setting, key)
    assert by["full"]["steps"] == 2 and by["seed-alpaca"]["steps"] == 1  # max_steps 1 a round, unmatched
    assert by["full-alpaca"]["steps"] == 1 and by["full-alpaca"]["rounds"] == [0]
    assert all(r["max_steps"] is None for r in rows)
    line = next(x for x in out.splitlines() if x.startswith("seed-alpaca "))
    assert f" {by['seed-alpaca']['examples']} " in line and f" {by['seed-alpaca']['tokens']} " in line

    # --match-steps: the full setting first, then every curriculum setting gets its step count.
    result = CliRunner().invoke(cli, ["--db", str(db), "ablate", str(cfg), "--match-steps"])
    assert result.exit_code == 0, result.output
    matched = {r["setting"]: r for r in json.loads((tmp_path / "out" / "ablation.json").read_text())}
    assert matched["full"]["steps"] == 2 and matched["full"]["max_steps"] is None
    for setting in ("seed-alpaca", "seed-alpaca-rw", "direct-expansion", "single-round"):
        assert matched[setting]["steps"] == 2 and matched[setting]["max_steps"] == 2, setting
    assert matched["full-alpaca"]["max_steps"] is None and matched["full-alpaca"]["run_id"] == by["full-alpaca"]["run_id"]
    assert "steps matched to the full setting (--match-steps)" in result.output


def test_several_students_share_what_does_not_read_the_student(tmp_path, tiny_model, cli):
    import sqlite_utils

    other = tmp_path / "tiny-2"
    import shutil

    shutil.copytree(tiny_model, other)
    data = yaml.safe_load(_config(tmp_path, tiny_model).read_text())
    data["students"] = [data.pop("student"), {"model": f"hf:{other}", "options": {"batch_size": 8}}]
    cfg = tmp_path / "students.yaml"
    cfg.write_text(yaml.safe_dump(data))
    db = tmp_path / "t.db"
    ScriptTeacher.calls = 0
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "study tiny-pipeline" in result.output and "\ntiny-2 " in result.output  # the study table
    store = sqlite_utils.Database(db)
    assert store.execute("select count(*) from runs where status = 'done'").fetchone()[0] == 2
    for stage in ("ingest", "teacher_answers", "classify", "heldout_answers"):
        keys = {r[0] for r in store.execute("select key from stages where name = ? and round = 0", [stage])}
        assert len(keys) == 1, stage
    assert store.execute("select count(distinct key) from stages where name = 'train' and round = 0").fetchone()[0] == 2
    bases = store.execute("select count(*) from benchmark_results where benchmark = 'heldout-loss' "
                          "and metric = 'nll' and json_extract(meta, '$.label') = 'base'").fetchone()[0]
    assert bases == 2  # each backbone beside its base
    shown = CliRunner().invoke(cli, ["--db", str(db), "compare", "--full", "--benchmark", "heldout-loss",
                                       "--format", "json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)["rows"]
    base_runs = {r["model"]: r["run_id"] for r in rows if r["is_base"]}
    assert len(base_runs) == 2 and all(r["status"] == "ok" for r in rows)
    students = [r for r in rows if not r["is_base"]]
    assert len(students) == 6  # S0, S1 and S2 of each backbone
    for r in students:
        assert r["delta_vs"] == base_runs[r["base"]], r
        base_nll = next(b for b in rows if b["is_base"] and b["model"] == r["base"])["scores"]["heldout/nll"]
        assert r["delta"]["heldout/nll"] == pytest.approx(r["scores"]["heldout/nll"] - base_nll)
    # runs show lists what a run produced: exported checkpoints, each model's held-out loss, the dataset.
    run_id = store.execute("select id from runs order by created_at limit 1").fetchone()[0]
    details = json.loads(CliRunner().invoke(cli, ["--db", str(db), "runs", "show", run_id, "--json"]).output)
    outputs = {o["what"]: o["value"] for o in details["outputs"]}
    assert {"held-out nll base", "held-out nll S0", "held-out nll S2", "exported round-2",
            "dataset (JSONL)"} <= set(outputs)
    assert not any(k.startswith("checkpoint ") for k in outputs)  # the exported copies stand for them
    assert (tmp_path / outputs["dataset (JSONL)"]).is_file()  # absolute: the join keeps it
    text = CliRunner().invoke(cli, ["--db", str(db), "runs", "show", run_id]).output
    assert "\noutputs:\n" in text and "held-out nll S1" in text


def test_reselect_seed_takes_each_rounds_cut_from_the_new_students_mfd(tmp_path, tiny_model, cli):
    import sqlite_utils

    cfg = write_config(
        tmp_path, tiny_model, judge={"name": "student-loss"},
        trainer={"name": "hf", "options": {"max_steps": 1, "max_length": 64, "learning_rate": 1e-2}},
        curriculum={"rounds": 2, "expand_per_round": [2, 2], "recompute_mfd": True, "reselect_seed": True},
        mfd={"delta": None, "top_fraction": 0.25})
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 0, result.output
    store = sqlite_utils.Database(db)
    keys = dict(store.execute("select name || ':' || round, key from stages").fetchall())
    assert "seed_cut:1" in keys and "judge:1" in keys
    hard0 = {r[0] for r in store.execute("select item_id from scores where scope = ? and name = 'hard' "
                                         "and value = 1", [keys["seed_cut:0"]])}
    hard1 = {r[0] for r in store.execute("select item_id from scores where scope = ? and name = 'hard' "
                                         "and value = 1", [keys["seed_cut:1"]])}
    assert len(hard0) == len(hard1) == 4
    mfd1 = dict(store.execute("select item_id, value from scores where scope = ? and name = 'mfd'",
                              [keys["judge:1"]]).fetchall())
    assert min(mfd1[i] for i in hard1) >= max(v for i, v in mfd1.items() if i not in hard1)
    # Round 2's resample draws from the cut of S1, round 1's from the cut of S0.
    pool2 = {r[0] for r in store.execute("select item_id from scores where scope = ? and name = 'draws'",
                                         [keys["resample:2"]])}
    assert hard1 <= pool2 and (hard0 - hard1).isdisjoint(pool2)
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 0
    statuses = [line.split()[2] for line in result.output.splitlines()
                if line.split()[:1] and line.split()[0] in ("seed_cut", "train", "judge")]
    assert statuses and set(statuses) == {"reused"}
