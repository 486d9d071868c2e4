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


@pytest.mark.slow
def test_pipeline_call_launches_torchrun_itself(tiny_model, tmp_path, monkeypatch):
    """The role call the pipeline makes, ``train(base, examples, out)`` in this process, with
    ``launcher: torchrun``: it launches 2 CPU workers on gloo, waits, and returns their metrics;
    this process never joins the process group."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from tapir.plugins import registry
    from tapir.roles import TrainExample

    for key, value in {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TAPIR_QUIET_LAUNCH": "1"}.items():
        monkeypatch.setenv(key, value)
    examples = [TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}], f"The answer is {2 * i}.",
                             0.3 if i % 2 else 0.7) for i in range(16)]
    trainer = registry().get("trainers", "hf").create(options=dict(
        launcher="torchrun", nproc_per_node=2, total_batch_size=8, per_device_train_batch_size=2,
        num_train_epochs=1, learning_rate=1e-3, seed=0))
    out = tmp_path / "round-1"
    metrics = trainer.train(str(tiny_model), examples, str(out))
    assert metrics["launcher"] == "torchrun" and metrics["world_size"] == 2
    assert metrics["grad_accum"] == 2 and metrics["batch_size"] == 8 and metrics["steps"] == 2
    assert metrics["examples"] == 16 and metrics["tokens"] > 0 and metrics["weight_sum"] == pytest.approx(8.0)
    assert "--nproc_per_node 2" in metrics["launch_command"]
    assert not dist.is_initialized()  # the orchestrating process stayed out of the job
    assert (out / "train.log").is_file() and (out / "tapir-train.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache is True


def test_launch_commands_for_multi_node_and_accelerate(tmp_path):
    """The command lines, without running them: one launcher per node through launch_prefix (SLURM's
    srun), c10d rendezvous, accelerate with a config file; DeepSpeed / FSDP reach TrainingArguments."""
    from tapir.errors import ConfigError
    from tapir_trainers.hf_trainer import HFTrainer, training_arguments
    from tapir_trainers.launch import launch_command

    def opts(**kw):
        return HFTrainer.Options(**kw)

    cmd = launch_command(opts(launcher="torchrun", nproc_per_node=8, nnodes=2, rdzv_endpoint="node1:29500",
                              launch_prefix=["srun", "--ntasks-per-node=1"]), tmp_path / "job")
    assert cmd[:2] == ["srun", "--ntasks-per-node=1"] and cmd[3:5] == ["-m", "torch.distributed.run"]
    joined = " ".join(cmd)
    assert "--nproc_per_node 8 --nnodes 2 --rdzv_backend c10d --rdzv_endpoint node1:29500" in joined
    assert joined.endswith(f"-m tapir_trainers.launch {tmp_path / 'job'}")
    acc = " ".join(launch_command(opts(launcher="accelerate", nproc_per_node=4, accelerate_config="zero3.yaml"),
                                  tmp_path / "job"))
    assert "accelerate.commands.launch --config_file zero3.yaml --num_processes 4 --num_machines 1" in acc
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        from tapir.plugins import registry

        registry().get("trainers", "hf").create(options={"launcher": "torchrun", "nnodes": 2})
    kwargs = training_arguments(opts(deepspeed="ds_zero2.json", fsdp="full_shard auto_wrap",
                                     fsdp_config={"min_num_params": 1000}), tmp_path, 4, 2, 8, True)
    assert kwargs["deepspeed"] == "ds_zero2.json" and kwargs["fsdp"] == "full_shard auto_wrap"
    assert kwargs["fsdp_config"] == {"min_num_params": 1000} and kwargs["gradient_accumulation_steps"] == 2
