"""evaluation.benchmarks: the configured benchmarks run inside the pipeline
on the base model and on every S_r, as `tapir bench run` runs them (same
runs, same rows), resume without re-running, stop the run with the reason
when a benchmark fails, and are checked before anything is written."""

from __future__ import annotations

import json

import pytest
import sqlite_utils
import yaml
from click.testing import CliRunner
from pipeline_helpers import ScriptPlugin, SpyPlugin, write_config

from tapir import hookimpl
from tapir.options import Options, option


class Quiz:
    """A benchmark double: the score grows with the round in the model's path."""

    runs: list[str] = []

    class Options(Options):
        broken: bool = option(False, "every question fails")
        needs_key: bool = option(False, "preflight reports a missing key")

    def __init__(self, options):
        self.options = options

    def preflight(self, model):
        return ["QUIZ_API_KEY is not set (export QUIZ_API_KEY=...)"] if self.options.needs_key else []

    def run(self, model, store, *, run_id, force=False):
        Quiz.runs.append(model)
        r = next((int(model.split("train-r")[1][0]) for _ in [0] if "train-r" in model), -1)
        failures = 10 if self.options.broken else 0
        meta = {"judge": None, "judge_mode": "reference", "failures": failures, "failure_reasons":
                {"timeout": failures} if failures else {}, "failure_example": None, "data_version": "quiz-1",
                "subset": None}
        return [{"task": "quiz", "metric": "acc", "value": 0.2 + 0.1 * (r + 1), "stderr": 0.01, "n": 10,
                 "meta": meta}]


class QuizPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("quiz", Quiz, description="a benchmark double")


@pytest.fixture
def cli_plugins():
    Quiz.runs = []
    return [(ScriptPlugin(), "test-script"), (SpyPlugin(), "test-spy"), (QuizPlugin(), "test-quiz")]


def _config(tmp_path, tiny_model, **bench):
    return write_config(tmp_path, tiny_model, curriculum={"rounds": 2, "expand_per_round": [2, 2]},
                        evaluation={"benchmarks": [{"name": "quiz", **bench}]})


def test_benchmarks_run_on_base_and_every_round_and_compare_shows_deltas(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 0, result.output
    assert len(Quiz.runs) == 4 and Quiz.runs[0] == f"hf:{tiny_model}"  # base, S0, S1, S2
    store = sqlite_utils.Database(db)
    rows = store.execute("select model, value from benchmark_results where benchmark = 'quiz' order by id").fetchall()
    assert [round(v, 4) for _, v in rows] == [0.2, 0.3, 0.4, 0.5]
    info = json.loads(store.execute("select info from stages where name = 'benchmarks' and round = 2").fetchone()[0])
    assert info["label"] == "S2" and info["scores"] == {"quiz": {"quiz/acc": pytest.approx(0.5)}}
    shown = json.loads(CliRunner().invoke(cli, ["--db", str(db), "compare", "--full", "--benchmark", "quiz",
                                                "--format", "json"]).output)["rows"]
    students = [r for r in shown if not r["is_base"]]
    assert len(students) == 3 and all(r["delta_vs"] for r in students)
    assert [round(r["delta"]["quiz/acc"], 4) for r in students] == [0.1, 0.2, 0.3]
    # A re-run reuses the stages: no benchmark runs again.
    again = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert again.exit_code == 0, again.output
    assert len(Quiz.runs) == 4


def test_rounds_last_runs_the_base_and_the_final_checkpoint_only(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model, rounds="last")
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg)])
    assert result.exit_code == 0, result.output
    assert len(Quiz.runs) == 2 and "train-r2" in Quiz.runs[1]


def test_a_failed_benchmark_stops_the_run_with_its_reason(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model, options={"broken": True})
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg)])
    assert result.exit_code == 1
    assert "benchmarks_base" in result.output and "quiz" in result.output
    assert "e.g. item quiz: quiz on hf:" in result.output
    assert "items could not be scored" in result.output and "Most common: 10 x timeout" in result.output


@pytest.mark.parametrize("bench, message", [
    ({"name": "nosuch"}, "unknown benchmark 'nosuch'. Available:"),
    ({"name": "quiz", "options": {"limt": 3}}, "limt"),
    ({"name": "quiz", "options": {"needs_key": True}}, "QUIZ_API_KEY is not set"),
])
def test_benchmark_mistakes_are_found_before_anything_is_written(tmp_path, tiny_model, cli, bench, message):
    data = yaml.safe_load(_config(tmp_path, tiny_model).read_text())
    data["evaluation"] = {"benchmarks": [bench]}
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code != 0
    assert message in result.output and "evaluation.benchmarks[0]" in result.output
    assert not db.exists() and Quiz.runs == []


def test_ablate_shows_each_settings_benchmark_scores(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "ablate", str(cfg)])
    assert result.exit_code == 0, result.output
    rows = {r["setting"]: r for r in json.loads((tmp_path / "out" / "ablation.json").read_text())}
    assert rows["full-alpaca"]["benchmarks"] == {"quiz/quiz/acc": pytest.approx(0.3)}  # S0
    assert rows["full"]["benchmarks"] == {"quiz/quiz/acc": pytest.approx(0.5)}  # S2
    assert rows["seed-alpaca"]["benchmarks"] == {"quiz/quiz/acc": pytest.approx(0.4)}  # its S1
    header = next(line for line in result.output.splitlines() if line.startswith("setting "))
    assert "quiz/quiz/acc" in header
    # the base model and S0 were benchmarked once for all six settings
    assert Quiz.runs.count(f"hf:{tiny_model}") == 1


def test_adding_a_benchmark_reuses_every_other_stage(tmp_path, tiny_model, cli):
    from pipeline_helpers import SEED_DATA

    heldout = {"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 4}}
    plain = write_config(tmp_path, tiny_model, curriculum={"rounds": 1, "expand_per_round": [2]},
                         evaluation=heldout)
    db = tmp_path / "t.db"
    assert CliRunner().invoke(cli, ["--db", str(db), "distill", str(plain)]).exit_code == 0
    data = yaml.safe_load(plain.read_text())
    data["evaluation"]["benchmarks"] = [{"name": "quiz"}]
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(more)])
    assert result.exit_code == 0, result.output
    store = sqlite_utils.Database(db)
    second = store.execute("select id from runs where name = 'tiny-pipeline' order by created_at desc, rowid desc "
                           "limit 1").fetchone()[0]
    ran = {(n, r) for n, r in store.execute("select name, round from stages where run_id = ? and reused_from is "
                                            "null", [second])}
    assert ran == {("benchmarks_base", 0), ("benchmarks", 0), ("benchmarks", 1), ("export", 0)}, ran
