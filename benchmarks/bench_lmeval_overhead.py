"""Overhead of tapir's lm-eval runner over calling ``lm_eval.simple_evaluate`` directly.

Both sides evaluate the same local multiple-choice task (written to a temp
folder: N questions x 4 choices) on the same model (the tiny test model
unless ``--model``), with the same batch size, alternating order, repeated
``--repeat`` times; medians are compared. A warm-up run of each comes first
(imports, the datasets cache), untimed.

Wall-clock and process CPU time are both measured (CPU time is the steadier
figure on a shared machine). Two ratios are printed for each:

* like for like: tapir (store, run, task loading, rows) against
  ``simple_evaluate`` with the same arguments, lm-eval's request cache
  included (a fresh cache file each time);
* against plain lm-eval: tapir with its default cache against
  ``simple_evaluate`` without a cache: the whole price of using tapir.

Target: ratio <= 1.05.

    python benchmarks/bench_lmeval_overhead.py [--questions 200] [--repeat 3] [--model PATH]
"""

from __future__ import annotations

import _support  # puts tests/support (the tapir_testing helpers) on sys.path; _support.timed

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # steadier timings on a shared machine

WORDS = ["blue", "sky", "fox", "dog", "Paris", "Berlin", "sleep", "exercise", "answer", "problem", "function",
         "square", "number", "morning", "capital", "healthy"]


def write_task(folder: Path, questions: int) -> Path:
    """A multiple-choice task YAML with absolute data files (so any cwd works for both sides)."""
    data = folder / "bench_mc.jsonl"
    with open(data, "w") as f:
        for i in range(questions):
            choices = [" ".join(WORDS[(i + j + k) % len(WORDS)] for k in range(1 + (i + j) % 6)) for j in range(4)]
            f.write(json.dumps({"question": f"Question {i}: pick one.", "choices": choices, "label": i % 4}) + "\n")
    yaml = folder / "bench_mc.yaml"
    yaml.write_text(
        "task: tapir_bench_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: \"{{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        "metadata:\n  version: 1.0\n"
    )
    return yaml


def main() -> None:
    import shutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", help="HF folder (default: the tiny random test model)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tapir-lmeval-bench-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:

    import lm_eval
    from lm_eval.tasks import TaskManager

    from tapir.bench import run_benchmark
    from tapir.store import open_store
    from tapir_testing.models import build_tiny_model

    model = args.model or str(build_tiny_model(work / "tiny"))
    task = write_task(work, args.questions)
    counter = {"n": 0}

    def fresh(name: str) -> Path:
        counter["n"] += 1
        path = work / f"{name}-{counter['n']}"
        path.mkdir()
        return path

    def direct(cache: bool) -> tuple[float, float]:
        where = fresh("direct")
        started, cpu = time.perf_counter(), time.process_time()
        tm = TaskManager(include_path=str(task.parent), include_defaults=False)
        lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": model, "dtype": "float32"}, tasks=["tapir_bench_mc"],
            task_manager=tm, device="cpu", batch_size=args.batch_size, log_samples=False,
            use_cache=str(where / "lm-eval-cache") if cache else None,
        )
        return time.perf_counter() - started, time.process_time() - cpu

    inside: list[float] = []
    outside: list[float] = []
    real_evaluate = lm_eval.simple_evaluate
    timed_evaluate = _support.timed(real_evaluate, inside.append)

    def ours() -> tuple[float, float]:
        where = fresh("tapir")
        lm_eval.simple_evaluate = timed_evaluate
        started, cpu = time.perf_counter(), time.process_time()
        store = open_store(where / "tapir.db")
        rows = run_benchmark(store, "lmeval", model, {"tasks": [str(task)], "batch_size": args.batch_size,
                                                       "device": "cpu"})
        store.close()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        lm_eval.simple_evaluate = real_evaluate
        outside.append(elapsed - inside[-1])
        assert rows, "no rows"
        return elapsed, cpu

    runs = {"tapir": ours, "direct+cache": lambda: direct(True), "direct": lambda: direct(False)}
    for fn in runs.values():  # warm-up: imports, datasets cache, page cache
        fn()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(args.repeat):
        for name in order if i % 2 == 0 else reversed(order):
            w, c = runs[name]()
            wall[name].append(w)
            cpu[name].append(c)
    print(f"task: {args.questions} questions x 4 choices = {4 * args.questions} loglikelihood requests, "
          f"batch {args.batch_size}, model {model}, {args.repeat} runs each")
    for label, times in (("wall", wall), ("cpu", cpu)):
        med = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"  {label} {name:<13} median {med[name]:.3f}s  runs {', '.join(f'{x:.3f}' for x in t)}")
        print(f"  {label} overhead ratio, like for like (tapir / simple_evaluate, same cache): "
              f"{med['tapir'] / med['direct+cache']:.3f}  (target <= 1.05)")
        print(f"  {label} overhead ratio, vs plain lm-eval (tapir / simple_evaluate, no cache): "
              f"{med['tapir'] / med['direct']:.3f}")
    own = statistics.median(outside[1:])
    print(f"  tapir's own wall time around simple_evaluate (store, run, model and task loading, rows): "
          f"median {own:.3f}s = {own / statistics.median(wall['direct+cache']):.1%} of a direct run "
          f"(an upper bound: task loading happens inside simple_evaluate on the direct side)")


if __name__ == "__main__":
    main()
