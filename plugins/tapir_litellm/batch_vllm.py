"""Offline batches for self-hosted models: ``vllm run-batch``.

vLLM's OpenAI server has no /v1/files or /v1/batches; its ``run-batch``
command reads the same OpenAI batch JSONL tapir writes and writes OpenAI
batch output lines. For ``vllm/<model>`` with ``batch: true`` tapir writes
the input under ``<database dir>/batches/``, runs ``batch_command -i IN -o
OUT --model <model>`` as a child process (killed with tapir: Linux's
parent-death signal) and reads OUT.

Resumable: the batch's "provider id" is our own id and its files are the
state. On every poll the input's ``custom_id``\\ s are compared with the lines
of all outputs written so far; when every request has a line the batch is
complete and is collected without running anything. Otherwise only the
requests without an output line are written to a new input and run (a run
killed halfway re-runs only what it did not finish).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from tapir_litellm import endpoints
from tapir_litellm.batch_protocol import BatchingBackend, RemoteBatch, jsonl_lines



def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGKILL when tapir dies (kill -9 included)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class VLLMRunBatch:
    """A batch = files under ``<database dir>/batches/<our id>.*``."""

    name = "vllm"

    def __init__(self, backend: BatchingBackend, store: Any):
        self.be = backend
        self.command = list(backend.options.batch_command)
        self.model = backend.model_name.split("/", 1)[1]
        self.dir = Path(store.path).resolve().parent / "batches"

    # -- files ----------------------------------------------------------------
    def _input(self, batch_id: str) -> Path:
        return self.dir / f"{batch_id}.input.jsonl"

    def _outputs(self, batch_id: str) -> list[Path]:
        return sorted(self.dir.glob(f"{batch_id}.output.*.jsonl"), key=lambda p: int(p.name.split(".")[-2]))

    def _done(self, batch_id: str) -> set[str]:
        done: set[str] = set()
        for path in self._outputs(batch_id):
            done.update(e.get("custom_id") for e in jsonl_lines(path.read_text(errors="replace")))
        return done

    # -- the protocol ---------------------------------------------------------
    def submit(self, batch_id: str, data: bytes, n: int, record: Callable[..., None]) -> RemoteBatch:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._input(batch_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # complete or absent
        record(input_file_id=str(path))
        return RemoteBatch(id=batch_id, status="in_progress", input_file_id=str(path))

    def find(self, batch_id: str, row: dict[str, Any]) -> RemoteBatch | None:
        path = self._input(batch_id)
        return RemoteBatch(id=batch_id, status="in_progress", input_file_id=str(path)) if path.exists() else None

    def retrieve(self, row: dict[str, Any]) -> RemoteBatch:
        batch_id = row["provider_batch_id"]
        source = self._input(batch_id)
        if not source.exists():
            return RemoteBatch(id=batch_id, status="failed", errors=f"input file {source} is gone")
        lines = {e["custom_id"]: e for e in jsonl_lines(source.read_text())}
        missing = [k for k in lines if k not in self._done(batch_id)]
        if missing:
            error = self._run(batch_id, [lines[k] for k in missing])
            still = [k for k in lines if k not in self._done(batch_id)]
            if error and len(still) == len(missing):  # the run gave nothing: say why
                return RemoteBatch(id=batch_id, status="failed", input_file_id=str(source), errors=error)
        outputs = self._outputs(batch_id)
        return RemoteBatch(id=batch_id, status="completed", input_file_id=str(source),
                           output_file_id=",".join(str(p) for p in outputs) or None)

    def results(self, remote: RemoteBatch) -> Iterator[dict[str, Any]]:
        for path in self._outputs(remote.id):
            yield from jsonl_lines(path.read_text(errors="replace"))

    # -- running vllm ---------------------------------------------------------
    def _run(self, batch_id: str, entries: list[dict[str, Any]]) -> str | None:
        """Run the command over ``entries``; an error text when it failed."""
        number = len(self._outputs(batch_id))
        run_input = self._input(batch_id) if number == 0 else self.dir / f"{batch_id}.rerun.{number}.jsonl"
        if number:
            run_input.write_text("".join(json.dumps(e) + "\n" for e in entries))
        output = self.dir / f"{batch_id}.output.{number}.jsonl"
        output.touch()  # numbered even if the command writes nothing
        argv = [*self.command, "-i", str(run_input), "-o", str(output), "--model", self.model]
        log = self.dir / f"{batch_id}.log.{number}.txt"
        try:
            with open(log, "wb") as sink:
                done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=self.be.options.batch_max_wait_seconds or None,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except FileNotFoundError:
            return f"command not found: {argv[0]} (install vllm or set options.batch_command)"
        except subprocess.TimeoutExpired:
            return f"{' '.join(self.command)} ran past batch_max_wait_seconds; see {log}"
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-800:].strip()
            return endpoints.clean(f"{' '.join(self.command)} exited {done.returncode}: {tail} (log: {log})")
        return None
