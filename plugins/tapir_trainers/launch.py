"""Training as a launched job: ``torchrun`` / ``accelerate launch`` of a worker.

With ``launcher: torchrun`` (or ``accelerate``) a trainer's ``train()``,
called once in the orchestrating process (the pipeline), does this:

1. makes ``output_dir`` this job's folder (fingerprint; another job's
   checkpoints are removed, see :mod:`tapir_trainers.jobdir`);
2. writes the examples and the options (launcher ``none``) into
   ``output_dir/.tapir-job/``;
3. runs ``[launch_prefix...] python -m torch.distributed.run ... -m
   tapir_trainers.launch JOB_DIR`` (or ``accelerate launch``), streaming the
   workers' output to stderr and ``output_dir/train.log``;
4. every rank trains with the same call (DDP / DeepSpeed / FSDP by the
   options), rank 0 writes the final model and ``metrics.json``;
5. returns those metrics (``launcher`` set) or raises with the log's tail.

API stages never run on ranks: only this function's child processes train.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError

from .jobdir import JOB_DIR, claim, fingerprint
from .options import LAUNCH_FIELDS


def _factory_path(trainer) -> str:
    cls = type(trainer)
    return f"{cls.__module__}:{cls.__qualname__}"


def _nproc(opts) -> int:
    if opts.nproc_per_node:
        return int(opts.nproc_per_node)
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # noqa: BLE001
        return 1


def launch_command(opts, job_dir: Path) -> list[str]:
    """The command line that starts the workers for ``opts`` (one launcher per node)."""
    nproc = _nproc(opts)
    worker = ["-m", "tapir_trainers.launch", str(job_dir)]
    if opts.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        if opts.nnodes > 1:
            cmd += ["--nnodes", str(opts.nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", opts.rdzv_endpoint,
                    "--rdzv_id", os.environ.get("SLURM_JOB_ID", job_dir.parent.name or "tapir")]
        else:
            cmd += ["--standalone"]
        return [*opts.launch_prefix, *cmd, *worker]
    if opts.launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if opts.accelerate_config:
            cmd += ["--config_file", str(opts.accelerate_config)]
        cmd += ["--num_processes", str(nproc * opts.nnodes)]
        if opts.nnodes > 1:
            host, _, port = opts.rdzv_endpoint.partition(":")
            cmd += ["--num_machines", str(opts.nnodes), "--main_process_ip", host,
                    "--main_process_port", port or "29500", "--rdzv_backend", "c10d"]
        else:
            cmd += ["--num_machines", "1"]
        if nproc * opts.nnodes > 1 and not opts.accelerate_config:
            cmd += ["--multi_gpu"] if _has_cuda() else []
        return [*opts.launch_prefix, *cmd, *worker]
    raise TapirError(f"unknown launcher {opts.launcher!r}")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def write_job(trainer, model_path: str, examples: Sequence[Any], out: Path, opts) -> Path:
    job = out / JOB_DIR
    job.mkdir(parents=True, exist_ok=True)
    with open(job / "examples.jsonl", "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({"prompt": list(ex.prompt), "response": str(ex.response),
                                "weight": float(getattr(ex, "weight", 1.0))}, ensure_ascii=False) + "\n")
    worker_options = opts.model_dump(mode="json", exclude_unset=True)
    for key in LAUNCH_FIELDS:
        worker_options.pop(key, None)
    (job / "job.json").write_text(json.dumps({
        "trainer": _factory_path(trainer),
        "base_model": model_path,
        "output_dir": str(out.resolve()),
        "options": worker_options,
    }, indent=2))
    (job / "metrics.json").unlink(missing_ok=True)
    return job


def launch(trainer, base_model: str, examples: Sequence[Any], output_dir: str, opts) -> dict[str, Any]:
    from .base_model import resolve_base_model

    out = Path(output_dir)
    model_path = resolve_base_model(base_model)
    same_job, removed = claim(out, fingerprint(trainer.name, model_path, examples, opts))
    job = write_job(trainer, model_path, examples, out, opts)
    cmd = launch_command(opts, job)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    env.setdefault("OMP_NUM_THREADS", "1")
    log_path = out / "train.log"
    with open(log_path, "ab") as log:
        log.write(("$ " + shlex.join(cmd) + "\n").encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            log.write(chunk)
            log.flush()
            _echo(chunk)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise TapirError(f"training job ({opts.launcher}) exited with code {code}; see {log_path}. "
                         f"Last lines:\n{tail}")
    metrics_path = job / "metrics.json"
    if not metrics_path.is_file():
        raise TapirError(f"training job ({opts.launcher}) finished without writing {metrics_path}; see {log_path}")
    metrics = json.loads(metrics_path.read_text())
    metrics.update(launcher=opts.launcher, nnodes=opts.nnodes, launch_command=shlex.join(cmd),
                   cleaned=removed, same_job=same_job)
    return metrics


def _echo(chunk: bytes) -> None:
    if os.environ.get("TAPIR_QUIET_LAUNCH"):
        return
    stream = sys.stderr
    try:
        stream.buffer.write(chunk)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        stream.write(chunk.decode(errors="replace"))
    stream.flush()


# ---- the worker: python -m tapir_trainers.launch JOB_DIR ------------------------------------


def worker(job_dir: str) -> int:
    import importlib

    from tapir.roles import TrainExample

    job = json.loads((Path(job_dir) / "job.json").read_text())
    module, _, attr = job["trainer"].partition(":")
    cls: Any = importlib.import_module(module)
    for part in attr.split("."):
        cls = getattr(cls, part)
    examples = []
    with open(Path(job_dir) / "examples.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            examples.append(TrainExample(row["prompt"], row["response"], row["weight"]))
    trainer = cls(cls.Options.model_validate(job["options"]))
    metrics = trainer.train(job["base_model"], examples, job["output_dir"])
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(job_dir) / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics))
        tmp.replace(Path(job_dir) / "metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
