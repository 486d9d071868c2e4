"""The Python API (docs/python.md): tapir.distill, tapir.bench.run,
tapir.compare, and the --set overrides they share with the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline_helpers import ROOT, ScriptedClassifier, ScriptPlugin, SpyPlugin, SpyTrainer, write_config
from tapir import hookimpl
from tapir.config import apply_overrides, load_config, parse
from tapir.errors import ConfigError
from tapir.options import Options, option

DOC = ROOT / "docs" / "python.md"


def doc_blocks(kind: str) -> list[str]:
    """The ```python blocks of docs/python.md marked <!-- tested: KIND -->."""
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"<!-- tested: {kind} -->\n```python\n(.*?)```", text, flags=re.S)


class ScriptedLmeval:
    """Stands in for lm-eval: a score that depends on the model's round."""

    class Options(Options):
        tasks: list[str] = option(["arc_easy"], "tasks")
        limit: int | None = option(None, "documents per task")

    runs: list = []

    def __init__(self, options):
        self.options = options

    def preflight(self, model):
        return []

    def run(self, model, store, *, run_id, force=False):
        ScriptedLmeval.runs.append(model)
        value = 0.25 + 0.5 * ("train-r1" in model)
        meta = {"judge": None, "judge_mode": "reference", "failures": 0, "failure_reasons": {},
                "failure_example": None, "data_version": "scripted-1",
                "subset": f"limit={self.options.limit}" if self.options.limit else None}
        return [{"task": t, "metric": "acc", "value": value, "stderr": 0.01, "n": self.options.limit or 10,
                 "meta": meta} for t in self.options.tasks]


class ScriptedLmevalPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("lmeval", ScriptedLmeval, description="scripted lm-eval for the docs example")

    @hookimpl
    def register_classifiers(self, register):
        register("scripted", ScriptedClassifier, description="hash of the text")


@pytest.fixture
def plugins(register_plugin, monkeypatch):
    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    register_plugin(ScriptedLmevalPlugin(), "test-scripted-lmeval")
    SpyTrainer.seen = []
    ScriptedLmeval.runs = []
    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.delenv("TAPIR_DB", raising=False)


def test_import_tapir_stays_light_and_exposes_the_api():
    code = ("import sys, tapir; heavy = [m for m in ('torch', 'transformers', 'sqlite_utils', 'litellm', "
            "'tapir.api', 'tapir.bench', 'tapir.compare') if m in sys.modules]; print(heavy); "
            "import tapir.compare; print(callable(tapir.compare), tapir.compare.build.__name__, "
            "tapir.bench.run.__module__, tapir.distill.__module__, tapir.DISTRIBUTION)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True build tapir.bench tapir.api tapir-distill"]


def test_docs_config_block_is_a_valid_config():
    (block,) = doc_blocks("config")
    namespace: dict = {}
    exec(block, namespace)
    config = parse(namespace["config"])
    assert config.curriculum.expand_per_round == [8, 6, 6]
    assert (ROOT / config.data.path).is_file()
    assert (ROOT / config.classifier.options["labels_path"]).is_file()


def test_docs_example_runs(tmp_path, tiny_model, plugins, monkeypatch, capsys):
    """The docs' run block, verbatim, on the tiny model with a scripted teacher
    and a scripted lm-eval."""
    (block,) = doc_blocks("run")
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(write_config(tmp_path, tiny_model).read_text())
    config["data"]["limit"] = 8
    config["classifier"] = {"name": "scripted"}
    namespace = {"config": config}
    exec(block, namespace)
    result, rows, table = namespace["result"], namespace["rows"], namespace["table"]

    assert result.status == "done" and result.failed == 0
    assert result.db == tmp_path / "my.db" and result.db.is_file()
    assert [(s.stage, s.round) for s in result.stages][:3] == [("ingest", 0), ("teacher_answers", 0), ("train", 0)]
    assert result.stage("ingest").ok == 8
    assert result.stage("expand", 1).ok == 4  # the override: expand_per_round=[4]
    assert set(result.checkpoints) == {0, 1}  # the override: one round
    assert all((p / "config.json").is_file() for p in result.checkpoints.values())
    assert result.final_checkpoint == result.checkpoints[1]
    train = result.stage("train", 1)
    assert train.info["examples"] == train.info["hard_examples"] + train.info["easy_examples"]
    assert train.info["alpha"] == pytest.approx(0.3)
    lines = result.dataset.read_text().splitlines()
    assert len(lines) == train.info["examples"] == result.stage("export").info["rows"]
    assert result.outcome.key("train", 1) == train.key

    assert ScriptedLmeval.runs == [str(result.final_checkpoint)]
    assert [(r["task"], r["metric"], r["value"], r["n"], r["meta"]["subset"]) for r in rows] == [
        ("arc_easy", "acc", 0.75, 20, "limit=20")]

    (student,) = [e for e in table.entries if e.run_id]
    assert student.model == str(result.final_checkpoint) and student.round == 1
    assert student.scores == {"arc_easy/acc": 0.75}
    base = [e for e in table.entries if e.is_base]
    assert [e.model for e in base] == [f"hf:{tiny_model}"] and base[0].status == "no results"
    out = capsys.readouterr().out
    assert f"{result.run_id} done" in out
    assert "arc_easy acc 0.75 20 limit=20" in out

    # called again: everything reused, no call made, the same run
    again = namespace["tapir"].distill(config, db="my.db",
                                       overrides=["curriculum.rounds=1", "curriculum.expand_per_round=[4]"])
    assert again.run_id == result.run_id
    assert {s.status for s in again.stages if s.stage != "export"} == {"reused"}
    assert sum(s.calls for s in again.stages) == 0


def test_distill_rejects_a_bad_dict_and_bad_overrides_before_writing(tmp_path, tiny_model, plugins, monkeypatch):
    import tapir

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        tapir.distill({"name": "x", "teacher": {"name": "default"}}, db="bad.db")
    path = write_config(tmp_path, tiny_model)
    with pytest.raises(ConfigError) as err:
        tapir.distill(path, db="bad.db", overrides=["mfd.deltaa=1"])
    assert str(err.value).startswith("--set mfd.deltaa=1: unknown key 'mfd.deltaa'. Did you mean 'delta'?")
    with pytest.raises(ConfigError) as err:
        tapir.distill(path, db="bad.db", overrides=["curriculum.rounds=two"])
    assert "'curriculum.rounds'" in str(err.value) and "--set curriculum.rounds=two" in str(err.value)
    assert not (tmp_path / "bad.db").exists() and not (tmp_path / "out").exists()


def test_compare_reads_only():
    import tapir
    from tapir.store.db import StoreMissing

    missing = Path("/nonexistent-tapir-dir/none.db")
    with pytest.raises(StoreMissing):
        tapir.compare(db=missing)
    assert not missing.parent.exists()


# --------------------------------------------------------------------------- --set


def test_apply_overrides_paths_indices_and_yaml_values():
    data = {"name": "x", "curriculum": {"expand_per_round": [1, 2, 3]}, "recipe": {"add": [{"stage": "a"}]}}
    out = apply_overrides(data, [
        "curriculum.expand_per_round.0=5",      # a list entry
        "curriculum.expand_per_round.3=7",      # one past the end appends
        "trainer.options.lr=1e-4",              # PyYAML reads 1e-4 as a string: a float here
        "trainer.options.tag='1e-4'",           # quoted: stays a string
        "trainer.options.lora={r: 8, alpha: 16}",
        "mfd.delta=null",
        "recipe.add.0.round=1",
        "name=my run",
    ])
    assert out == {"name": "my run", "curriculum": {"expand_per_round": [5, 2, 3, 7]},
                   "recipe": {"add": [{"stage": "a", "round": 1}]}, "mfd": {"delta": None},
                   "trainer": {"options": {"lr": 0.0001, "tag": "1e-4", "lora": {"r": 8, "alpha": 16}}}}
    assert data["curriculum"]["expand_per_round"] == [1, 2, 3]  # the input is not changed


@pytest.mark.parametrize("item, message", [
    ("mfd.deltaa=3", "--set mfd.deltaa=3: unknown key 'mfd.deltaa'. Did you mean 'delta'? Allowed here: allow_nonpositive, delta, "),
    ("nope=1", "--set nope=1: unknown key 'nope'. Allowed here: budget, classifier, curriculum, "),
    ("recipe.add.0.stagee=x", "--set recipe.add.0.stagee=x: unknown key 'recipe.add.0.stagee'. Did you mean 'stage'?"),
    ("curriculum.expand_per_round.9=1", "--set curriculum.expand_per_round.9=1: index 9 is outside "
                                        "'curriculum.expand_per_round' (3 entries; 3 appends)"),
    ("curriculum.expand_per_round.x=1", "'curriculum.expand_per_round' is a list; index it with a number, got 'x'"),
    ("name.first=1", "--set name.first=1: 'name' is str 'x', not a mapping or a list"),
    ("mfd.delta", "--set mfd.delta: give KEY=VALUE"),
    ("mfd..delta=1", "has an empty part"),
    ("mfd.delta=[1", "the value is not valid YAML"),
])
def test_apply_overrides_errors_name_the_key(item, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides({"name": "x", "curriculum": {"expand_per_round": [1, 2, 3]}}, [item])
    assert message in str(err.value)


def test_load_config_validates_overridden_values_like_the_file(tmp_path, tiny_model, plugins):
    path = write_config(tmp_path, tiny_model)
    cfg = load_config(path, overrides=["curriculum.rounds=2", "curriculum.expand_per_round=[3, 2]",
                                       "mfd.top_fraction=0.25"])
    assert (cfg.curriculum.rounds, cfg.curriculum.expand_per_round, cfg.mfd.top_fraction) == (2, [3, 2], 0.25)
    with pytest.raises(ConfigError) as err:  # checked together: 2 rounds, 3 entries
        load_config(path, overrides=["curriculum.rounds=2"])
    assert "expand_per_round has 3 entries for 2 round(s)" in str(err.value)
    assert "(with --set curriculum.rounds=2)" in str(err.value)
    with pytest.raises(ConfigError, match="'mfd.top_fraction': Input should be less than or equal to 1"):
        load_config(path, overrides=["mfd.top_fraction=3"])


def test_cli_set_reaches_the_config(tmp_path, tiny_model, plugins, monkeypatch):
    from tapir.cli import _add_commands, cli as main

    _add_commands()

    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, tiny_model)
    runner = CliRunner()
    bad = runner.invoke(main, ["--db", "cli.db", "distill", str(path), "--set", "curriculum.roundz=1"])
    assert bad.exit_code == 2
    assert "--set curriculum.roundz=1: unknown key 'curriculum.roundz'. Did you mean 'rounds'?" in bad.output
    bad = runner.invoke(main, ["--db", "cli.db", "mfd", str(path), "--set", "judge.nam=x"])
    assert bad.exit_code == 2 and "unknown key 'judge.nam'" in bad.output
    assert not (tmp_path / "cli.db").exists()
    plan = runner.invoke(main, ["--db", "cli.db", "distill", str(path), "--dry-run",
                                "--set", "curriculum.rounds=1", "--set", "curriculum.expand_per_round=[2]"])
    assert plan.exit_code == 0, plan.output
    assert "train" in plan.output and "round 2" not in plan.output.lower()
    assert not (tmp_path / "cli.db").exists()


def test_cli_help_documents_set():
    from tapir.cli import _add_commands, cli as main

    _add_commands()

    out = CliRunner().invoke(main, ["distill", "--help"]).output
    assert "--set KEY=VALUE" in out and "curriculum.expand_per_round.0=5" in " ".join(out.split())
    json.dumps(out)  # plain text
