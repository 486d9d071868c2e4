"""The whole TAPIR pipeline on the tiny model, asserting the numbers that
must hold: MFD arithmetic, the seed cut, re-sampled task proportions, alpha
per round, the weights reaching the trainer, and rows per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import ScriptPlugin, SpyPlugin, SpyTrainer, write_config

from tapir.tasks import paper_weights


@pytest.fixture
def pipeline_plugins(register_plugin):
    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    SpyTrainer.seen = []


def test_pipeline_numbers(tmp_path, tiny_model, pipeline_plugins, monkeypatch):
    from rouge_score import rouge_scorer

    from tapir.pipeline.runner import distill
    from tapir.pipeline.taskmix import allocate

    monkeypatch.setenv("TAPIR_QUIET", "1")
    cfg = write_config(tmp_path, tiny_model)
    out = distill(cfg, str(tmp_path / "t.db"))
    db = out.store.db
    from tapir import dedup

    assert dedup._KEPT == {}  # the de-dup filter kept across the run's rounds is dropped when it ends

    def count(sql, stage, round=0):
        return db.execute(sql, [out.key(stage, round)]).fetchone()[0]

    # Rows per stage, each under its stage's key.
    assert count("select count(*) from items where scope = ? and origin = 'seed'", "ingest") == 16
    assert count("select count(*) from responses where scope = ? and role = 'teacher'", "teacher_answers") == 16
    assert count("select count(*) from responses where scope = ? and role = 'student'", "student_answers") == 16
    assert count("select count(*) from judgments where scope = ? and round = 0", "judge") == 16
    assert count("select count(*) from classifications where scope = ?", "classify") == 16
    assert sum(count("select count(*) from checkpoints where scope = ?", "train", r) for r in range(4)) == 4
    expanded = sum(count("select count(*) from items where scope = ? and origin = 'expanded'", "expand", r)
                   for r in (1, 2, 3))
    assert expanded == 6 + 4 + 4
    stages = {(s["name"], s["round"]): s for s in out.run.stages()}
    assert all(s["status"] == "done" for s in stages.values())
    assert len({s["key"] for s in stages.values()}) == len(stages)  # one key per node
    assert all(r.failed == 0 for r in out.results)

    # MFD arithmetic: teacher score 10, student 1 + 9 * ROUGE-L F1, MFD = difference.
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    teacher = {r["item_id"]: r["text"] for r in db.query(
        "select item_id, text from responses where scope = ?", [out.key("teacher_answers")])}
    student = {r["item_id"]: r["text"] for r in db.query(
        "select item_id, text from responses where scope = ?", [out.key("student_answers")])}
    mfd = out.scores("judge", 0, "mfd")
    assert len(mfd) == 16
    for item_id, value in mfd.items():
        sim = scorer.score(teacher[item_id], student[item_id])["rougeL"].fmeasure
        assert value == pytest.approx(10 - (1 + 9 * sim), abs=1e-6)
        t, s = out.scores("judge", 0, "teacher_score")[item_id], out.scores("judge", 0, "student_score")[item_id]
        assert value == pytest.approx(t - s)

    # The seed cut: top half by MFD.
    hard = {i for i, v in out.scores("seed_cut", 0, "hard").items() if v == 1.0}
    assert len(hard) == 8
    assert min(mfd[i] for i in hard) >= max(mfd[i] for i in mfd if i not in hard)

    # Re-sampled task proportions follow the weights over the types present.
    weights = paper_weights()
    for r, total in ((1, 6), (2, 4), (3, 4)):
        info = json.loads(stages[("resample", r)]["info"])
        pool_types = [t for t, v in info["per_task"].items() if v["pool"] > 0]
        expected = allocate(total, weights, pool_types)
        drawn = {t: v["drawn"] for t, v in info["per_task"].items() if v["drawn"]}
        assert drawn == expected
        assert sum(drawn.values()) == total

    # Alpha per round, and the weights that reached the trainer (Eq. 4: each
    # hard example alpha_r, each easy one 1 - alpha_r).
    assert Path(SpyTrainer.seen[0][0]).name == f"train-r0-{out.key('train', 0)[:12]}"
    for r, alpha in ((1, 0.3), (2, 0.5), (3, 0.7)):
        info = json.loads(stages[("train", r)]["info"])
        assert info["alpha"] == pytest.approx(alpha)
        _, examples = SpyTrainer.seen[r]
        n_hard = info["hard_examples"]
        assert [e.weight for e in examples[:n_hard]] == pytest.approx([alpha] * n_hard)
        assert [e.weight for e in examples[n_hard:]] == pytest.approx([1 - alpha] * (len(examples) - n_hard))
        assert info["hard_weight_share"] == pytest.approx(
            round(alpha * n_hard / (alpha * n_hard + (1 - alpha) * (len(examples) - n_hard)), 4))
        # hard set = D_S plus everything expanded so far, rewritten; Eq. 3 (sampling: task) trains on
        # every pair of it at least once and up-samples to the task mix.
        cov = info["coverage"]
        assert cov["available"] == cov["used"] == 8 + sum((6, 4, 4)[:r])
        assert cov["seeds_available"] == cov["seeds_used"] == 8
        assert n_hard == cov["examples"] >= cov["available"]
        assert len({e.prompt[0]["content"] for e in examples[:n_hard]}) == cov["available"]
        assert all(e.response.startswith("Step by step") for e in examples[:n_hard])

    # Exports.
    out = Path(out.out_dir)
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == json.loads(stages[("train", 3)]["info"])["hard_examples"] + 8
    assert (out / "dataset" / "dataset_info.json").exists()
    card = (out / "checkpoints" / "round-3" / "README.md").read_text()
    assert "| round | 3 of 3 |" in card and "| 0.70 / 0.30 |" in card


def test_rerun_makes_no_calls(tmp_path, tiny_model, pipeline_plugins, monkeypatch):
    from tapir.pipeline.runner import distill

    monkeypatch.setenv("TAPIR_QUIET", "1")
    cfg = write_config(tmp_path, tiny_model, curriculum={"rounds": 1, "expand_per_round": [4]})
    out = distill(cfg, str(tmp_path / "t.db"))
    calls = out.store.execute("select count(*) from llm_calls").fetchone()[0]
    tables = {t: out.store[t].count for t in ("items", "responses", "judgments", "scores", "checkpoints")}
    out.store.close()
    out2 = distill(cfg, str(tmp_path / "t.db"))
    assert out2.store.execute("select count(*) from llm_calls").fetchone()[0] == calls
    assert {t: out2.store[t].count for t in tables} == tables
    assert len(SpyTrainer.seen) == 2  # S0 and S1 trained once each
    assert {r.status for r in out2.results} == {"reused"}


def test_student_loss_judge_needs_no_student_answers(tmp_path, tiny_model, pipeline_plugins, monkeypatch):
    import math

    from tapir.pipeline.runner import distill

    monkeypatch.setenv("TAPIR_QUIET", "1")
    cfg = write_config(tmp_path, tiny_model, judge={"name": "student-loss"},
                       curriculum={"rounds": 1, "expand_per_round": [4]})
    out = distill(cfg, str(tmp_path / "t.db"))
    db = out.store.db
    assert db.execute("select count(*) from responses where role = 'student'").fetchone()[0] == 0
    assert out.key("student_answers") is None
    rows = list(db.query("select item_id, raw, details, score_a, score_b, kind from judgments"))
    assert len(rows) == 16 and {r["kind"] for r in rows} == {"loss"}
    mfd = out.scores("judge", 0, "mfd")
    for r in rows:
        nll = json.loads(r["details"])["nll"]
        assert r["score_b"] == pytest.approx(10 * math.exp(-nll))
        assert mfd[r["item_id"]] == pytest.approx(10 - 10 * math.exp(-nll))
    assert len({round(v, 6) for v in mfd.values()}) > 8  # a spread, not a constant


def test_mfd_command_shows_the_runs_distribution(tmp_path, tiny_model, pipeline_plugins, monkeypatch):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli
    from tapir.pipeline.runner import distill

    monkeypatch.setenv("TAPIR_QUIET", "1")
    cfg = write_config(tmp_path, tiny_model, judge={"name": "student-loss"},
                       curriculum={"rounds": 1, "expand_per_round": [2]})
    db = str(tmp_path / "t.db")
    out = distill(cfg, db)
    expected = sorted(out.scores("judge", 0, "mfd").values())
    _add_commands()
    result = CliRunner().invoke(cli, ["--db", db, "mfd", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stage_key"] == out.key("judge", 0)
    assert sorted(data["values"]) == pytest.approx(expected)
    assert data["n"] == 16
    # The configured cut (write_config: top_fraction 0.5) as the seed_cut stage made it, with its ties.
    cut = out.info("seed_cut", 0)
    assert data["cut"]["hard"] == cut["hard"] and data["cut"]["rule"] == cut["rule"]
    assert data["cut"]["excluded_nonpositive"] == cut["excluded_nonpositive"]
    text = CliRunner().invoke(cli, ["--db", db, "mfd", str(cfg)]).stdout
    assert f"configured cut: {cut['hard']} of 16 judged items (top 50% of judged items by MFD" in text
    # Candidate deltas on the judge's own scale (student-loss: MFD well under 10), not a fixed 0.5..3.
    assert [c["delta"] for c in data["candidates"]][-1] <= max(expected)
    top = data["candidates"][-1]
    assert f"delta {top['delta']:>8.4g}: {sum(v > top['delta'] for v in expected)} of 16 kept" in text
