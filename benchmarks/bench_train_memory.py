"""Memory of the ``hf`` trainer's set-up: N synthetic examples shaped like a
late rehearsal round (``--repeat`` copies of each hard example, as task
up-sampling makes, then easy ones), tokenised by the trainer's own set-up
(``BaseTrainer._prepare``), then optionally trained for ``--max-steps``
steps on the tiny model.

    python benchmarks/bench_train_memory.py --n 35000 [--repeat 2] [--train] [--top 12]

Prints the RSS (current, from /proc) and the traced Python allocations
(tracemalloc) after each phase, and the biggest holders by line.
"""

from __future__ import annotations

import _support  # noqa: F401

import argparse
import gc
import json
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def examples(n: int, repeat: int, seed: int = 0):
    from tapir.roles import Item
    from tapir.pipeline.stages.train import weighted_examples

    rng = random.Random(seed)
    words = "river mountain ledger violin protein harvest orbit lantern glacier canyon satellite compiler".split()

    def item(i: int) -> Item:
        text = f"Explain how the {' '.join(rng.sample(words, 5))} {i} works."
        return Item(id=f"i{i}", instruction=text, output="An answer about " + text[:60], task_type="Open QA")

    n_hard = n * 3 // 5 // repeat
    hard = [item(i) for i in range(n_hard)]
    hard = [it for it in hard for _ in range(repeat)]
    easy = [item(n_hard + i) for i in range(n - len(hard))]
    return weighted_examples(hard, easy, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=35000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--no-trace", action="store_true", help="RSS only (tracemalloc slows tokenising)")
    args = parser.parse_args()
    from tapir_testing.models import build_tiny_model
    from tapir_trainers.hf_trainer import HFTrainer
    from tapir_trainers.train_rows import sampler_reads

    tmp = Path(tempfile.mkdtemp(prefix="tapir-trainmem-"))
    model = build_tiny_model(tmp / "tiny")
    import transformers  # noqa: F401  (imported before the first figure: it is not the set-up's)
    report = {"start_rss_mb": round(rss_now_mb(), 1)}
    if not args.no_trace:
        tracemalloc.start()
    exs = examples(args.n, args.repeat)
    report["examples"] = len(exs)
    report["after_examples_rss_mb"] = round(rss_now_mb(), 1)
    trainer = HFTrainer(HFTrainer.Options(max_steps=args.max_steps, batch_size=8, micro_batch_size=8,
                                          max_length=64, lr=1e-3))
    opts = trainer.options
    cpu, wall = time.process_time(), time.perf_counter()
    job = trainer._prepare(str(model), exs, str(tmp / "out"), opts,
                           sampler_reads=sampler_reads(group_by_length=True, packing=False))
    report["prepare_cpu_s"] = round(time.process_time() - cpu, 2)
    report["prepare_wall_s"] = round(time.perf_counter() - wall, 2)
    gc.collect()
    report["after_prepare_rss_mb"] = round(rss_now_mb(), 1)
    report["gc_objects_after_prepare"] = len(gc.get_objects())
    if not args.no_trace:
        snap = tracemalloc.take_snapshot()
        report["traced_mb"] = round(sum(s.size for s in snap.statistics("filename")) / 2**20, 1)
        report["top"] = [f"{s.size / 2**20:.1f} MB {s.count} blocks {s.traceback[0]}"
                         for s in snap.statistics("lineno")[: args.top]]
    del job
    if args.train:
        tracemalloc.stop()
        cpu, wall = time.process_time(), time.perf_counter()
        trainer.train(str(model), exs, str(tmp / "out2"))
        report["train_cpu_s"] = round(time.process_time() - cpu, 2)
        report["train_wall_s"] = round(time.perf_counter() - wall, 2)
        gc.collect()
        report["after_train_rss_mb"] = round(rss_now_mb(), 1)
        # what of the training is still alive once train() has returned
        kinds = ("TrainRows", "Encoded", "WeightedLossTrainer", "LlamaForCausalLM", "DataLoader")
        alive = {k: 0 for k in kinds}
        for o in gc.get_objects():
            name = type(o).__name__
            if name in alive:
                alive[name] += 1
        report["alive_after_train"] = alive
    report["peak_rss_mb"] = round(peak_mb(), 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
