"""The README's main job, configs/demo.yaml, on the real embedded models
(slow: about 8 minutes on 2 CPU cores; run from the repo root,
where the demo's lm-eval include_path points)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_demo_config_end_to_end(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tapir.pipeline.runner import distill

    monkeypatch.setenv("TAPIR_QUIET", "1")
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["output_dir"] = str(tmp_path / "out")
    config["data"]["path"] = str(ROOT / "data" / "demo_instructions.jsonl")
    config["classifier"]["options"]["labels_path"] = str(ROOT / "data" / "seed_instructions.jsonl")
    config["evaluation"]["heldout"]["path"] = str(ROOT / "data" / "seed_instructions.jsonl")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))

    ctx = distill(path, str(tmp_path / "demo.db"))
    stages = ctx.run.stages()
    assert all(s["status"] == "done" for s in stages)
    rounds = config["curriculum"]["rounds"]
    n = len((ROOT / "data" / "demo_instructions.jsonl").read_text().splitlines())
    assert ctx.store["checkpoints"].count == rounds + 1
    assert len(ctx.scores("judge", 0, "mfd")) == n
    hard = sum(v == 1.0 for v in ctx.scores("seed_cut", 0, "hard").values())
    assert hard == round(config["mfd"]["top_fraction"] * n)
    # the working rows bring Math, Reasoning and Code in, and the seed cut finds some of them hard
    types = {r[0] for r in ctx.store.execute("select task_type from items where origin = 'seed'")}
    assert {"Math", "Reasoning", "Code Generation", "Code Debug"} <= types
    # Eq. 3 visibly changes the mix: the up-weighted types' share of S1's hard training set is above
    # their share of the pool D_P it is drawn from
    s1 = next(s for s in stages if s["name"] == "train" and s["round"] == 1)
    per_task = json.loads(s1["info"])["coverage"]["per_task"]
    up = [t for t in ("Math", "Reasoning", "Code Generation", "Code Debug") if t in per_task]
    assert up
    pool = sum(v["available"] for v in per_task.values())
    assert sum(per_task[t]["share"] for t in up) > sum(per_task[t]["available"] for t in up) / pool
    # the shipped lm-eval task ran through lm-eval on the base model and every S_r
    models = ctx.store.execute("select count(distinct model) from benchmark_results where benchmark = 'lmeval'")
    assert models.fetchone()[0] == rounds + 2
    expanded = ctx.store.execute("select count(*) from items where origin = 'expanded'").fetchone()[0]
    assert 0 < expanded <= sum(config["curriculum"]["expand_per_round"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "dataset.jsonl").read_text().splitlines()]
    # the final round's training set: every pair of D_P at least once (Eq. 3 up-samples some), and the easy rows
    assert len({r["id"] for r in rows}) == hard + expanded + (n - hard)
    final_train = next(s for s in stages if s["name"] == "train" and s["round"] == rounds)
    assert len(rows) == json.loads(final_train["info"])["examples"]
    final = tmp_path / "out" / "checkpoints" / f"round-{rounds}"
    assert "| round |" in (final / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.use_cache is True
