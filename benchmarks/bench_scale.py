"""Issue 20 item 7 ("Scale"): the rehearsal (bench_rehearsal.py) BEFORE and
AFTER side by side (at the same time), at each N, with ratios.

BEFORE is another checkout of the project (e.g. main:
``git -C /work/main worktree add --detach /work/wt/base main``), AFTER is this
one. Each run is its own process whose PYTHONPATH puts that checkout (and its
plugins/) first, so the same script measures both codes on the same machine
at about the same time (a shared machine: compare CPU ms/item, which waiting
costs nothing, more than wall time).

    python benchmarks/bench_scale.py --before /work/wt/base --n 1000 10000 --out results/scale
    python benchmarks/bench_scale.py --compare results/scale/before-1000.json results/scale/after-1000.json
    python benchmarks/bench_scale.py --dedup 52000      # the de-dup filter per round: built again vs kept
    python benchmarks/bench_scale.py --classify 2000    # centroid classify: given order vs length order
    python benchmarks/bench_scale.py --tokenize 52000    # trainer tokenisation: every row vs rows max_steps reads

Per stage it prints CPU ms/item before and after and their ratio (after /
before: below 1 is faster), then the totals: wall, CPU, peak RSS, database.
A run's JSON is kept (``--out``) and reused when it exists, so an
interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def start_one(checkout: Path, n: int, out: Path, extra: list[str]) -> subprocess.Popen | None:
    """Start the rehearsal at ``n`` with ``checkout``'s code (None: its JSON is there already)."""
    if out.exists():
        return None
    env = dict(os.environ, PYTHONPATH=f"{checkout}:{checkout / 'plugins'}", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    # This checkout's bench_rehearsal.py measures both codes: the same measuring script.
    return subprocess.Popen([sys.executable, str(HERE / "bench_rehearsal.py"), "--n", str(n), "--json", str(out),
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_pair(before: Path, n: int, out: Path, extra: list[str]) -> tuple[dict, dict]:
    """BEFORE and AFTER at ``n``, run at the same time (each its own process),
    so that both see the same load on a shared machine."""
    paths = (out / f"before-{n}.json", out / f"after-{n}.json")
    procs = [start_one(before, n, paths[0], extra), start_one(ROOT, n, paths[1], extra)]
    for proc in procs:
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"rehearsal {proc.args} exited {proc.returncode}")
    return tuple(json.loads(p.read_text()) for p in paths)


def ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a else "-"


def compare(before: dict, after: dict) -> None:
    tb, ta = before["total"], after["total"]
    print(f"\nN={tb['n']}  (before: {tb['wall_s']} s wall, after: {ta['wall_s']} s wall)")
    print("| stage | rnd | items | CPU ms/item before | CPU ms/item after | ratio | wall s before | wall s after |")
    print("|---|---|---|---|---|---|---|---|")
    after_by = {(s["stage"], s["round"]): s for s in after["stages"]}
    for s in before["stages"]:
        a = after_by.get((s["stage"], s["round"]))
        if a is None:
            continue
        name = s["stage"] + (" (model)" if s["model"] else "")
        print(f"| {name} | {s['round']} | {a['items']} | {s['cpu_ms_per_item']:.3f} | {a['cpu_ms_per_item']:.3f} | "
              f"{ratio(s['cpu_ms_per_item'], a['cpu_ms_per_item'])} | {s['wall_s']:.1f} | {a['wall_s']:.1f} |")
    for label, key in (("wall s", "wall_s"), ("CPU s", "cpu_s"), ("peak RSS MB", "rss_mb"), ("db MB", "db_mb")):
        print(f"| **{label}** | | | {tb[key]} | {ta[key]} | {ratio(tb[key], ta[key])} | | |")


def bench_dedup(n: int) -> None:
    """The expand stage's filter at the paper's proportions scaled to ``n``:
    per round, the CPU of a filter built from the whole pool (before) and of
    the kept one that adds only the pool's new texts (after)."""
    import time

    import _support  # noqa: F401
    from bench_rehearsal import synthetic_rows
    from tapir.dedup import NearDuplicateFilter, forget_filters, pool_filter

    rows = [r["instruction"] for r in synthetic_rows(n + 3 * n // 2, seed=5)]
    pool, fresh_rows = rows[:n], rows[n:]
    per_round = [max(1, round(n * k / 52000)) for k in (19000, 20000, 20000)]
    forget_filters()
    print(f"de-dup minhash, pool {n}: CPU s to have the round's filter (built again / kept)")
    at = 0
    for r, k in enumerate(per_round, 1):
        t = time.process_time()
        NearDuplicateFilter("minhash", 0.7, pool)
        built = time.process_time() - t
        t = time.process_time()
        kept = pool_filter("minhash", 0.7, pool)
        reused = time.process_time() - t
        new = fresh_rows[at:at + k]
        at += k
        accepted = [x for x, ok in zip(new, kept.accept_many(new)) if ok]
        print(f"  round {r}: pool {len(pool)}: built {built:.2f} s, kept {reused:.2f} s "
              f"(ratio {reused / built:.3f}); accepted {len(accepted)}")
        pool = pool + accepted
    forget_filters()


def bench_classify(n: int) -> None:
    """Centroid classification of ``n`` rehearsal texts: ms per text with the
    texts in their given order (before) and in length order (after)."""
    import time

    import _support  # noqa: F401
    from bench_rehearsal import SEED_DATA, synthetic_rows
    from tapir_classifiers.centroid import CentroidClassifier
    from tapir_hf.encoder import embed

    texts = [r["instruction"] for r in synthetic_rows(n, seed=9)]
    clf = CentroidClassifier(None, CentroidClassifier.Options(labels_path=str(SEED_DATA)))
    t = time.process_time()
    before = embed(texts, clf.encoder) @ clf.centroids.T
    before_ms = 1000 * (time.process_time() - t) / n
    t = time.process_time()
    after = clf.similarities(texts)
    after_ms = 1000 * (time.process_time() - t) / n
    same = (before.argmax(axis=1) == after.argmax(axis=1)).mean()
    print(f"classify {n} texts: CPU {before_ms:.2f} ms/text given order, {after_ms:.2f} ms/text length order "
          f"(ratio {after_ms / before_ms:.2f}); same label for {same:.2%}")


def bench_tokenize(n: int, max_steps: int, batch: int = 8, max_length: int = 64) -> None:
    """The trainer's tokenisation of ``n`` rehearsal examples (the tiny
    model's tokenizer, the rehearsal's batch 8 and max_length 64): every row
    up front (before; still so when the sampler reads lengths) and only the
    rows ``max_steps`` steps read, in a sampler's random order, a micro-batch
    per call plus the one micro-batch the loader reads ahead (after)."""
    import tempfile
    import time

    import _support  # noqa: F401
    import torch
    from bench_rehearsal import synthetic_rows
    from tapir_testing.models import build_tiny_model
    from transformers import AutoTokenizer

    from tapir.roles import TrainExample
    from tapir_trainers.train_rows import TrainRows

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(Path(tmp) / "tiny"))
    examples = [TrainExample([{"role": "user", "content": r["instruction"]}], "An answer about " + r["instruction"], 1.0)
                for r in synthetic_rows(n, seed=11)]
    TrainRows.of(tokenizer, examples[:8], max_length).tokenize_all()  # the template installed, warm
    t = time.process_time()
    full = TrainRows.of(tokenizer, examples, max_length).tokenize_all()
    full_s = time.process_time() - t
    t = time.process_time()
    lazy = TrainRows.of(tokenizer, examples, max_length)
    prompts_s = time.process_time() - t
    order = torch.randperm(len(lazy), generator=torch.Generator().manual_seed(0)).tolist()
    read = order[:(max_steps + 1) * batch]
    for at in range(0, len(read), batch):
        lazy.many(read[at:at + batch])
    lazy_s = time.process_time() - t
    print(f"tokenise {n} examples, max_steps {max_steps} x batch {batch}: every row {full_s:.2f} s CPU "
          f"({full.tokenized} rows); on read {lazy_s:.2f} s ({lazy.tokenized} rows; prompts of all {prompts_s:.2f} s) "
          f"ratio {lazy_s / full_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="the BEFORE checkout (its root)")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scale", help="where the JSON of each run goes")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"),
                        help="print the comparison of two rehearsal JSON files and exit")
    parser.add_argument("--dedup", type=int, metavar="N", help="time the de-dup filter per round at pool N and exit")
    parser.add_argument("--classify", type=int, metavar="N", help="time centroid classification of N texts and exit")
    parser.add_argument("--tokenize", type=int, metavar="N",
                        help="time the trainer's tokenisation of N examples (every row / rows max_steps reads) and exit")
    parser.add_argument("--tokenize-steps", type=int, default=2, metavar="S", help="max_steps for --tokenize")
    args, extra = parser.parse_known_args()
    if args.tokenize:
        bench_tokenize(args.tokenize, args.tokenize_steps)
        return
    if args.dedup:
        bench_dedup(args.dedup)
        return
    if args.classify:
        bench_classify(args.classify)
        return
    if args.compare:
        compare(*(json.loads(Path(p).read_text()) for p in args.compare))
        return
    if args.before is None:
        parser.error("--before CHECKOUT is needed (or --compare)")
    args.out.mkdir(parents=True, exist_ok=True)
    for n in args.n:
        compare(*run_pair(args.before.resolve(), n, args.out, extra))


if __name__ == "__main__":
    main()
