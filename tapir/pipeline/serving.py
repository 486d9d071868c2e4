"""The student's answers through any backend (``student.serve``): the local
transformers backend (default), vLLM in process (``model: "vllm:{checkpoint}"``),
or an OpenAI-compatible server serving the round's checkpoint, given by the
user or started and stopped by tapir (``launch: "vllm serve {checkpoint}
--port {port}"``)."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

from tapir import progress
from tapir.errors import TapirError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_placeholders(value: Any, **names: Any) -> Any:
    """``value`` (text, or a mapping or list of them) with its {placeholders} filled from ``names``."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill_placeholders(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, **names) for v in value]
    return value


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TapirError(f"the student server exited with code {proc.returncode} before it was ready "
                             f"(see its output above); command: {shlex.join(proc.args)}")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2) as r:  # noqa: S310 - local server
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TapirError(f"the student server at {url} was not ready after {timeout_s:.0f} s")


def checkpoint_fingerprint(folder: str) -> str:
    """Identifies a checkpoint's weights (names, sizes, mtimes of its files)."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".model", ".gguf"):
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _served(ctx, model: str, options: dict, checkpoint: str):
    """A cached backend for a served checkpoint. A server's model name says
    nothing about which weights it serves, so the checkpoint's fingerprint
    joins the model id (the cache key): round 2 never reads round 1's answers."""
    from tapir.models import load_cached

    backend = load_cached(model, ctx.store, ctx.run.id, options)
    backend.model_id = f"{backend.model_id}|weights:{checkpoint_fingerprint(checkpoint)}"
    backend.tags = {**ctx.call_tags, "role": "student"}
    return backend


def served_component(model: str, options: dict[str, Any]):
    """The backend component of ``student.serve.model``; one that cannot be
    pointed at the servers tapir launches (no ``served_at`` capability,
    tapir.roles.Servable) is a :class:`TapirError` (preflight says it first)."""
    from tapir.models import resolve
    from tapir.plugins import registry

    component = registry().get("backends", resolve(model, options).backend)
    if "served_at" not in component.capabilities:
        raise TapirError(f"student.serve.launch starts a server, but backend '{component.name}' "
                         f"({component.plugin}) of '{model}' cannot be sent to one (it has no served_at "
                         f"capability): serve an OpenAI-compatible model id, e.g. openai/NAME, or drop launch")
    return component


@contextmanager
def student_backend(ctx, checkpoint: str) -> Iterator[Any]:
    """A cached backend answering as the checkpoint, for the time of a stage;
    closed after it (an in-process engine gives its GPU memory back, a
    launched server is stopped)."""
    serve = ctx.config.student.serve
    if serve is None:
        backend = ctx.backend("student", f"hf:{checkpoint}", ctx.config.student.options)
        try:
            yield backend
        finally:
            backend.close()
        return
    ports = [serve.port + i for i in range(serve.replicas)] if serve.port else [_free_port() for _ in
                                                                                 range(serve.replicas)]
    names = {"checkpoint": checkpoint, "port": ports[0]}
    model = fill_placeholders(serve.model, **names)
    options = fill_placeholders(serve.options, **names)
    procs: list[subprocess.Popen] = []
    try:
        if serve.launch:
            for replica, port in enumerate(ports):
                procs.append(_launch(serve, checkpoint, port, replica))
            bases = [f"http://127.0.0.1:{port}/v1" for port in ports]
            options = served_component(model, options).capability("served_at")(options, bases)
            for proc, base in zip(procs, bases):
                _wait_ready(base, proc, serve.ready_timeout_s)
        backend = _served(ctx, model, options, checkpoint)
        try:
            yield backend
        finally:
            backend.close()
    finally:
        for proc in procs:
            _stop(proc)


def _launch(serve, checkpoint: str, port: int, replica: int) -> subprocess.Popen:
    """One server replica; with several, replica i sees GPUs
    [i * gpus_per_replica, (i + 1) * gpus_per_replica) (CUDA_VISIBLE_DEVICES)."""
    import os

    cmd = shlex.split(fill_placeholders(serve.launch, checkpoint=checkpoint, port=port, replica=replica))
    env = None
    if serve.replicas > 1:
        first = replica * serve.gpus_per_replica
        gpus = ",".join(str(g) for g in range(first, first + serve.gpus_per_replica))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
        progress.say(f"   starting student server {replica + 1} of {serve.replicas} on GPUs {gpus}: "
                     f"{shlex.join(cmd)}")
    else:
        progress.say(f"   starting the student server: {shlex.join(cmd)}")
    return subprocess.Popen(cmd, env=env)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
