"""Trainer throughput: tapir's ``hf`` trainer vs a plain transformers ``Trainer``.

Same model, same examples, same effective batch and micro-batch, one epoch:

* ``plain``: ``transformers.Trainer`` + ``DataCollatorForLanguageModeling``
  (pad each micro-batch to its longest row, loss on every token), random order;
* ``tapir (random order)``: our trainer, random batches like plain (the
  cost of our loss and collator alone, same padding);
* ``tapir (group_by_length)``: our trainer with its defaults (response-only
  weighted loss, length-grouped batches);
* ``tapir+packing``: our trainer with ``packing=True``;
* ``trl SFTTrainer``: the ``trl`` trainer (TRL's SFTTrainer, fused LM-head
  loss, with tapir's labels and weights), random order and length-grouped.

Throughput is non-padding tokens per second of ``trainer.train()`` (model
loading and tokenisation excluded for all). Targets: tapir >= 0.9x plain;
padding waste with packing < 10%.

    python benchmarks/bench_trainer.py                      # tiny Llama, hidden 256, 4 layers
    python benchmarks/bench_trainer.py --model embedded --examples 64 --max-length 512
"""

from __future__ import annotations

import _support  # noqa: F401  (puts tests/support, the tapir_testing helpers, on sys.path)

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the model learns to answer each question step by step with a short clear explanation of the result "
         "and checks its work before it writes the final answer in one line").split()


def make_examples(n: int, seed: int = 0):
    """Instruction data with realistic spread: short and long prompts and answers."""
    from tapir.roles import TrainExample

    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        answer = " ".join(rng.choice(WORDS) for _ in range(int(rng.paretovariate(1.2) * 15) % 250 + 3))
        out.append(TrainExample([{"role": "user", "content": f"Task {i}: {prompt}?"}], answer + ".", 1.0))
    return out


def resolve_model(name: str, workdir: Path) -> str:
    if name == "tiny":
        from tapir_testing.models import build_tiny_model

        return str(build_tiny_model(workdir / "bench-llama-256x4", hidden_size=256, layers=4))
    from tapir_trainers.hf_trainer import resolve_base_model

    return resolve_base_model(name if name != "embedded" else "embedded:smollm2-135m-instruct")


def run_plain(model_path: str, examples, args, out: str) -> dict:
    """transformers.Trainer with the standard causal-LM collator."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments)
    from transformers.trainer_callback import PrinterCallback

    from tapir_trainers.collate import encode_examples

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    encoded, _ = encode_examples(tok, examples, args.max_length)
    dataset = [{"input_ids": e.input_ids} for e in encoded]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    targs = TrainingArguments(
        output_dir=out, per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=args.batch // args.micro, num_train_epochs=1, learning_rate=2e-5,
        warmup_steps=0.03, lr_scheduler_type="cosine", logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0,
    )
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    real = sum(len(e.input_ids) for e in encoded)
    positions = []

    def counting(features):
        batch = collator(features)
        positions.append(batch["input_ids"].numel())
        return batch

    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=counting)
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"tokens": real, "seconds": seconds, "tokens_per_s": real / seconds,
            "padding_fraction": 1 - real / sum(positions), "steps": trainer.state.global_step}


def run_tapir(model_path: str, examples, args, out: str, trainer: str = "hf", **options) -> dict:
    from tapir.plugins import registry

    built = registry().get("trainers", trainer).create(options=dict(
        total_batch_size=args.batch, per_device_train_batch_size=args.micro, num_train_epochs=1,
        max_length=args.max_length, save_steps=10**9, seed=0, resume=False, **options))
    return built.train(model_path, examples, out, progress=lambda *a: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | embedded | a model folder")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setup, interleaved; the best is kept")
    parser.add_argument("--no-trl", action="store_true", help="leave out the trl trainer rows")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tapir-bench-trainer-") as tmp:
        workdir = Path(tmp)
        model_path = resolve_model(args.model, Path(os.environ.get("TAPIR_BENCH_CACHE", tmp)))
        examples = make_examples(args.examples)
        setups = {
            "plain transformers Trainer": lambda out: run_plain(model_path, examples, args, out),
            "tapir (random order)": lambda out: run_tapir(model_path, examples, args, out, group_by_length=False),
            "tapir (group_by_length)": lambda out: run_tapir(model_path, examples, args, out),
            "tapir (packing)": lambda out: run_tapir(model_path, examples, args, out, packing=True,
                                                     group_by_length=False),
        }
        if not args.no_trl:
            setups["trl SFTTrainer (random order)"] = lambda out: run_tapir(
                model_path, examples, args, out, trainer="trl", group_by_length=False)
            setups["trl SFTTrainer (group_by_length)"] = lambda out: run_tapir(
                model_path, examples, args, out, trainer="trl")
        results: dict[str, list[dict]] = {name: [] for name in setups}
        for r in range(args.repeats):
            for i, (name, fn) in enumerate(setups.items()):
                cpu = time.process_time()
                metrics = fn(str(workdir / f"run{r}-{i}"))
                metrics["cpu_seconds"] = time.process_time() - cpu
                results[name].append(metrics)
                print(f"  run {r + 1}/{args.repeats} {name}: {results[name][-1]['tokens_per_s']:.0f} tok/s",
                      file=sys.stderr)

    best = {name: max(runs, key=lambda m: m["tokens_per_s"]) for name, runs in results.items()}
    base = best["plain transformers Trainer"]["tokens_per_s"]
    print(f"\nmodel={args.model} examples={args.examples} batch={args.batch} micro={args.micro} "
          f"max_length={args.max_length} threads={os.environ['OMP_NUM_THREADS']} repeats={args.repeats} (best kept)")
    cpu_best = {name: max(m["tokens"] / m["cpu_seconds"] for m in runs) for name, runs in results.items()}
    cpu_base = cpu_best["plain transformers Trainer"]
    print("wall: trainer.train() only; cpu: the whole setup (load, tokenise, train, save) in CPU seconds,")
    print("which a machine shared with other jobs disturbs far less than wall time.")
    print(f"{'setup':<33} {'tokens':>7} {'steps':>5} {'wall s':>7} {'tok/s':>6} {'x plain':>7} "
          f"{'tok/cpu-s':>9} {'x plain':>7} {'padding':>7}")
    for name, m in best.items():
        spread = statistics.pstdev([x["tokens_per_s"] for x in results[name]]) if len(results[name]) > 1 else 0
        print(f"{name:<33} {m['tokens']:>7} {m['steps']:>5} {m['seconds']:>7.1f} {m['tokens_per_s']:>6.0f} "
              f"{m['tokens_per_s'] / base:>6.2f}x {cpu_best[name]:>9.0f} {cpu_best[name] / cpu_base:>6.2f}x "
              f"{m['padding_fraction']:>6.1%}   (wall sd {spread:.0f} tok/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
