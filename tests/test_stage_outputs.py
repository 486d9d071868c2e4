"""Stage outputs are the store's, not one run's (tapir/pipeline/stagedirs.py):
checkpoints live under ``<db folder>/<db name>-stages/``, a run's
``output_dir/checkpoints/round-N`` link there, so deleting one run's output
folder breaks no run that reuses its stages, and a re-run re-creates its
links without training again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline_helpers import ScriptedClassifier, ScriptPlugin, SpyPlugin, SpyTrainer, write_config
from tapir import hookimpl
from tapir.options import Options, option
from tapir.pipeline.stagedirs import link_checkpoints, stage_dir, stages_root, unreferenced
from tapir.store import open_store

# --------------------------------------------------------------------------- units


def test_stages_root_is_beside_the_database(tmp_path):
    assert stages_root(tmp_path / "db" / "t.db", tmp_path / "out") == (tmp_path / "db" / "t-stages").resolve()
    assert stages_root(tmp_path / "tapir.db", tmp_path / "out").name == "tapir-stages"
    assert stages_root(None, tmp_path / "out") == tmp_path / "out" / "stages"  # an in-memory database


def test_a_training_begun_before_the_upgrade_resumes_where_it_is(tmp_path):
    out = tmp_path / "out"
    legacy = out / "stages" / "train-r1-abc"
    legacy.mkdir(parents=True)  # an interrupted training of the old layout (checkpoint-* inside)
    assert stage_dir(tmp_path / "t.db", out, "train-r1-abc") == legacy
    assert stage_dir(tmp_path / "t.db", out, "train-r2-def") == (tmp_path / "t-stages" / "train-r2-def").resolve()
    (tmp_path / "t-stages" / "train-r1-abc").mkdir(parents=True)
    assert stage_dir(tmp_path / "t.db", out, "train-r1-abc") == (tmp_path / "t-stages" / "train-r1-abc").resolve()


def test_links_are_relative_and_a_missing_checkpoint_gets_none(tmp_path):
    shared = tmp_path / "t-stages" / "train-r0-abc"
    shared.mkdir(parents=True)
    out = tmp_path / "runs" / "a"
    (out / "checkpoints").mkdir(parents=True)
    os.symlink(tmp_path / "gone", out / "checkpoints" / "round-1")  # a link left by an earlier run
    links, missing = link_checkpoints(out, {0: str(shared), 1: str(tmp_path / "old-out" / "stages" / "train-r1-x")})
    assert links == {"round-0": str(out / "checkpoints" / "round-0")}
    assert os.readlink(out / "checkpoints" / "round-0") == "../../../t-stages/train-r0-abc"
    assert (out / "checkpoints" / "round-0").resolve() == shared.resolve()
    assert not (out / "checkpoints" / "round-1").is_symlink()  # no dangling link
    (line,) = missing
    assert line.startswith("checkpoint of round 1 is missing: ") and "old-out/stages/train-r1-x" in line
    assert "change a trainer option" in line


def test_unreferenced_lists_folders_no_stage_row_names(tmp_path):
    store = open_store(tmp_path / "t.db")
    root = tmp_path / "t-stages"
    (tmp_path / "other-stages" / "train-r1-bbbbbbbbbbbb").mkdir(parents=True)  # another database's
    for name in ("train-r0-aaaaaaaaaaaa", "train-r1-bbbbbbbbbbbb"):
        (root / name).mkdir(parents=True)
    with store.db.conn:
        store["runs"].insert({"id": "run-1", "name": "x", "status": "done"})
        store["stages"].insert({"run_id": "run-1", "name": "train", "round": 0, "status": "done",
                                "key": "aaaaaaaaaaaa" + "0" * 12})
    assert unreferenced(store) == [(root / "train-r1-bbbbbbbbbbbb").resolve()]
    store.close()


# --------------------------------------------------------------------------- two runs, one train stage


class ScriptedBench:
    """A benchmark that needs the checkpoint's files: it reads its config."""

    class Options(Options):
        limit: int | None = option(None, "items")

    def __init__(self, options):
        self.options = options

    def preflight(self, model):
        return []

    def run(self, model, store, *, run_id, force=False):
        from transformers import AutoConfig

        layers = AutoConfig.from_pretrained(model.split(":", 1)[-1]).num_hidden_layers
        meta = {"judge": "fake/judge", "judge_mode": "reference", "failures": 0, "failure_reasons": {},
                "failure_example": None, "data_version": "v1", "subset": None}
        return [{"task": "overall", "metric": "score", "value": float(layers), "stderr": None, "n": 1, "meta": meta}]


class OutputsPlugin:
    @hookimpl
    def register_classifiers(self, register):
        register("scripted", ScriptedClassifier)

    @hookimpl
    def register_evaluators(self, register):
        register("mtbench", ScriptedBench, description="scripted MT-Bench")


@pytest.fixture
def plugins(register_plugin, monkeypatch):
    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    register_plugin(OutputsPlugin(), "test-outputs")
    SpyTrainer.seen = []
    monkeypatch.setenv("TAPIR_QUIET", "1")


def _config(tmp_path: Path, tiny_model: Path, out: str) -> dict:
    config = yaml.safe_load(write_config(tmp_path, tiny_model).read_text())
    config["data"]["limit"] = 8
    config["classifier"] = {"name": "scripted"}
    config["curriculum"] = {"rounds": 1, "expand_per_round": [4]}
    config["output_dir"] = str(tmp_path / out)
    return config


def test_deleting_one_runs_outputs_breaks_no_other_run(tmp_path, tiny_model, plugins):
    import tapir
    from tapir.cli import _add_commands, cli

    _add_commands()

    db = tmp_path / "t.db"
    a = tapir.distill(_config(tmp_path, tiny_model, "out-a"), db=db)
    assert len(SpyTrainer.seen) == 2  # S0 and S1
    shared = (tmp_path / "t-stages").resolve()
    assert {p.parent for p in a.checkpoints.values()} == {shared}  # the store's folder, not out-a's
    assert not (tmp_path / "out-a" / "stages").exists()
    for r, path in a.checkpoints.items():
        assert (tmp_path / "out-a" / "checkpoints" / f"round-{r}").resolve() == path.resolve()

    # Run B: another output_dir, so another run; it reuses every stage but the export.
    b = tapir.distill(_config(tmp_path, tiny_model, "out-b"), db=db)
    assert b.run_id != a.run_id and len(SpyTrainer.seen) == 2
    assert {s.stage: s.status for s in b.stages if s.stage == "train"} == {"train": "reused"}
    assert b.checkpoints == a.checkpoints

    shutil.rmtree(tmp_path / "out-a")

    # B's checkpoints still load, through its links and its stored paths.
    from transformers import AutoModelForCausalLM

    for r in (0, 1):
        link = tmp_path / "out-b" / "checkpoints" / f"round-{r}"
        assert link.resolve() == b.checkpoints[r].resolve()
        assert AutoModelForCausalLM.from_pretrained(link).config.num_hidden_layers > 0
        assert (link / "README.md").is_file()  # the model card the export wrote
    rows = tapir.bench.run("mtbench", str(tmp_path / "out-b" / "checkpoints" / "round-1"), {}, db=db)
    assert rows[0]["value"] > 0
    result = CliRunner().invoke(cli, ["--db", str(db), "compare", b.run_id, "--format", "json"])
    assert result.exit_code == 0, result.output
    (s1,) = [row for row in json.loads(result.output)["rows"] if row["round"] == 1]
    assert s1["model"] == str(b.checkpoints[1].resolve()) and s1["cells"]["mtbench"]["value"] == rows[0]["value"]

    # B again: everything reused, its links kept.
    again_b = tapir.distill(_config(tmp_path, tiny_model, "out-b"), db=db)
    assert {s.status for s in again_b.stages} == {"reused"} and len(SpyTrainer.seen) == 2

    # A again: nothing trained, its links re-created into the shared folder.
    again_a = tapir.distill(_config(tmp_path, tiny_model, "out-a"), db=db)
    assert again_a.run_id == a.run_id
    assert {s.status for s in again_a.stages} == {"reused"} and len(SpyTrainer.seen) == 2
    for r in (0, 1):
        link = tmp_path / "out-a" / "checkpoints" / f"round-{r}"
        assert link.is_symlink() and link.resolve() == a.checkpoints[r].resolve()


def test_an_old_databases_paths_into_a_run_folder_keep_working(tmp_path, tiny_model, plugins):
    """A database from before <db name>-stages/ stored checkpoints under the first
    run's output_dir: a re-run reuses those paths as they are (nothing is
    moved), and once that folder is gone says so instead of linking to nothing."""
    import tapir

    db = tmp_path / "t.db"
    a = tapir.distill(_config(tmp_path, tiny_model, "out-a"), db=db)
    # Make it look like the old layout: move S1's folder into out-a/stages and point the rows there.
    old = tmp_path / "out-a" / "stages" / a.checkpoints[1].name
    old.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(a.checkpoints[1]), old)
    store = open_store(db)
    with store.db.conn:
        for rowid, info in store.execute("select id, info from stages where name = 'train' and round = 1").fetchall():
            store.execute("update stages set info = ? where id = ?",
                          [json.dumps({**json.loads(info), "path": str(old)}), rowid])
        store.execute("update checkpoints set path = ? where round = 1", [str(old)])
    store.close()

    b = tapir.distill(_config(tmp_path, tiny_model, "out-b"), db=db)
    assert b.checkpoints[1] == old and len(SpyTrainer.seen) == 2
    assert (tmp_path / "out-b" / "checkpoints" / "round-1").resolve() == old.resolve()

    shutil.rmtree(tmp_path / "out-a")
    again = tapir.distill(_config(tmp_path, tiny_model, "out-b"), db=db)
    assert len(SpyTrainer.seen) == 2
    assert not (tmp_path / "out-b" / "checkpoints" / "round-1").is_symlink()  # no dangling link
    assert (tmp_path / "out-b" / "checkpoints" / "round-0").resolve() == a.checkpoints[0].resolve()
    assert again.run_id == b.run_id
