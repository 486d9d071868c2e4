"""Kill the pipeline in the middle of a stage (SIGKILL, no clean-up), re-run,
and get the same final tables and the same count of LLM calls as a run that
was never interrupted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlite_utils
from pipeline_helpers import snapshot, write_config

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import sys
from pipeline_helpers import ScriptPlugin
from tapir.plugins import get_plugin_manager
get_plugin_manager().register(ScriptPlugin(), name="test-script")
from tapir.pipeline.runner import distill
distill(sys.argv[1], sys.argv[2])
"""


def run_distill(config: Path, db: Path, crash_at: int | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "TAPIR_QUIET": "1"}
    env.pop("TAPIR_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["TAPIR_TEST_CRASH_AT"] = str(crash_at)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(db)], env=env,
                          capture_output=True, text=True, timeout=600)
    if crash_at is None and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def test_crash_mid_stage_then_resume(tmp_path, tiny_model):
    rounds = {"rounds": 2, "expand_per_round": [6, 4]}
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_dir.mkdir()
    crash_dir.mkdir()
    clean_cfg = write_config(clean_dir, tiny_model, curriculum=rounds, trainer={"name": "hf", "options": {
        "epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_length": 96, "lr": 1e-3}})
    crash_cfg = write_config(crash_dir, tiny_model, curriculum=rounds, trainer={"name": "hf", "options": {
        "epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_length": 96, "lr": 1e-3}})

    run_distill(clean_cfg, clean_dir / "t.db")
    # 16 teacher answers, then the expansion of round 1: die on its 3rd request.
    code = run_distill(crash_cfg, crash_dir / "t.db", crash_at=16 + 3)
    assert code == -9
    half = sqlite_utils.Database(crash_dir / "t.db")
    assert half.execute("select status from stages where name = 'expand' and round = 1").fetchone()[0] == "running"
    run_distill(crash_cfg, crash_dir / "t.db")

    clean, resumed = snapshot(clean_dir / "t.db", calls=True), snapshot(crash_dir / "t.db", calls=True)
    assert resumed["stages"] == clean["stages"]
    for table in ("items", "responses", "judgments", "scores", "classifications", "rewrites", "checkpoints"):
        assert resumed[table] == clean[table], table
    assert resumed["llm_calls"] == clean["llm_calls"]
    assert resumed["llm_calls_by_model"] == clean["llm_calls_by_model"]
