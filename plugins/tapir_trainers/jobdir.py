"""An output folder belongs to one training job.

``train()`` writes ``tapir-train.json`` into ``output_dir``: a fingerprint of
the base model (its weights id: folder path plus content fingerprint, or the
hub id), the examples (prompt, response, weight) and the options that change
what is learned. A later ``train()`` into the same folder resumes a
``checkpoint-*`` only when the fingerprint matches; otherwise the folder's
checkpoints, adapter and job files are removed and training starts fresh, so
a checkpoint of other data or another base model is never continued.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from .options import NOT_IN_FINGERPRINT

FINGERPRINT_FILE = "tapir-train.json"
JOB_DIR = ".tapir-job"


def base_model_id(model_path: str) -> str:
    try:
        from tapir_hf.backend import weights_id

        return weights_id(model_path)
    except Exception:  # noqa: BLE001 - a plain name is still an id
        return str(model_path)


def examples_digest(examples: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        row = [list(ex.prompt), str(ex.response), float(getattr(ex, "weight", 1.0))]
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def fingerprint(trainer: str, model_path: str, examples: Sequence[Any], options) -> dict[str, Any]:
    learned = {k: v for k, v in options.model_dump(mode="json").items() if k not in NOT_IN_FINGERPRINT}
    parts = {
        "trainer": trainer,
        "base_model": base_model_id(model_path),
        "examples": examples_digest(examples),
        "options": learned,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return {"fingerprint": key, "trainer": trainer, "base_model": parts["base_model"], "n_examples": len(examples)}


def matches(out: Path, fp: dict[str, Any]) -> bool:
    try:
        return json.loads((out / FINGERPRINT_FILE).read_text()).get("fingerprint") == fp["fingerprint"]
    except (OSError, ValueError):
        return False


def start_fresh(out: Path) -> list[str]:
    """Remove what an earlier job left in ``out`` that a new one could pick
    up: checkpoints, the adapter, job files. Returns what was removed. Model
    files in the root are overwritten by the new save."""
    removed = []
    for path in [*out.glob("checkpoint-*"), out / "adapter", out / JOB_DIR, out / FINGERPRINT_FILE]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif path.exists():
            path.unlink()
            removed.append(path.name)
    return removed


def claim(out: Path, fp: dict[str, Any]) -> tuple[bool, list[str]]:
    """Make ``out`` this job's folder: ``(same_job, removed)``. Call on the main process only."""
    out.mkdir(parents=True, exist_ok=True)
    if matches(out, fp):
        return True, []
    removed = start_fresh(out)
    (out / FINGERPRINT_FILE).write_text(json.dumps(fp, indent=2) + "\n")
    return False, removed
