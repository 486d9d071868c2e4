"""The hf trainer under ``torchrun --nproc_per_node 2`` on CPU (gloo): the same
``train`` call, unchanged, runs data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from tapir.plugins import registry
    from tapir.roles import TrainExample

    model, out, report = sys.argv[1:4]
    examples = [
        TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}], f"The answer is {2 * i}.", 1.0 + i % 2)
        for i in range(16)
    ]
    trainer = registry().get("trainers", "hf").create(options=dict(batch_size=8, micro_batch_size=2, epochs=2, lr=1e-3, seed=0))
    metrics = trainer.train(model, examples, out)
    packed = trainer.train(model, examples, out + "-packed", packing=True, weighting="sampling", epochs=1)
    rank = int(os.environ["RANK"])
    with open(os.path.join(report, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "metrics": metrics, "packed": packed}, f)
    """
)


def test_torchrun_two_cpu_processes(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out, report = tmp_path / "out", tmp_path / "report"
    report.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tiny_model), str(out), str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        m = r["metrics"]
        assert m["world_size"] == 2
        # effective batch 8 = 2 per device x 2 ranks x 2 accumulation; 16 examples x 2 epochs -> 4 steps
        assert m["micro_batch_size"] == 2 and m["grad_accum"] == 2 and m["batch_size"] == 8
        assert m["steps"] == 4
    m0, m1 = ranks[0]["metrics"], ranks[1]["metrics"]
    assert m0["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-5)  # logged loss is the all-rank mean
    assert m0["tokens"] == m1["tokens"] > 0  # summed over both ranks
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache is True

    # packing (variable-size micro-batches, sharded whole) with weighted sampling, 1 epoch -> 2 steps
    p0, p1 = ranks[0]["packed"], ranks[1]["packed"]
    assert p0["world_size"] == 2 and p0["steps"] == p1["steps"] == 2
    assert p0["tokens"] == p1["tokens"] > 0 and p0["padding_fraction"] < 0.1
    assert p0["train_loss"] == pytest.approx(p1["train_loss"], rel=1e-5)
    AutoModelForCausalLM.from_pretrained(str(out) + "-packed")
