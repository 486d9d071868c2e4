"""Near-duplicate filtering at the paper's sizes (tapir.dedup).

The expansion stage of configs/paper.yaml filters about 59K new
instructions against a pool of about 70K (the seed set and earlier rounds).
This measures, for pools of 1K, 10K and 70K texts and 59/70 as many
candidates:

* the wall time of ``NearDuplicateFilter(method, 0.7, pool).accept_many(candidates)``
  for ``minhash`` (verified, the default), ``minhash`` without verification and
  the exact ``rouge`` index (pool construction included);
* recall and precision of each minhash variant against exact ROUGE-L F1 >= 0.7,
  on a sample of candidates checked against the fixed pool
  (``duplicates()``): the truth is the exact ``rouge`` index, itself checked
  against a brute-force scan of the whole pool on a smaller sample.

The corpus is synthetic and seeded: instructions built from the shipped seed
instructions' templates with their content words replaced by Zipf-distributed
words, and a sixth of the candidates edited copies of pool texts (0-60 % of
their words substituted, deleted, inserted or swapped), so that pairs fall on
both sides of the threshold. Run::

    .venv/bin/python benchmarks/bench_dedup.py            # 1K, 10K, 70K
    .venv/bin/python benchmarks/bench_dedup.py --sizes 1000 --sample 500

The ``minhash`` method is datasketch's (``MinHash.generator`` signatures,
bands and rows of datasketch's ``MinHashLSH`` choosing, indexed by tapir/dedup_bands.py, see tapir/dedup.py);
``--num-perm`` sets its permutations.

Measured (2 CPU cores shared with other jobs, load average 4.03 at the start,
3.02 at the end; datasketch 2.0.0, num_perm 256, 51 bands of 5 rows; wall s,
CPU s in brackets; the exact index is timed up to 10K; one run, 3 min 17 s):

| pool | cands | minhash s (cpu) | exact rouge s | minhash no-verify s (cpu) | recall | precision | recall nv | precision nv | sample (dups) |
|------|-------|-----------------|---------------|---------------------------|--------|-----------|-----------|--------------|---------------|
| 1000 | 843 | 0.69 (0.85) | 0.15 | 0.35 (0.35) | 0.994 | 1.000 | 0.929 | 0.838 | 843 (156) |
| 10000 | 8429 | 3.99 (3.85) | 14.46 | 4.56 (4.44) | 0.985 | 1.000 | 0.944 | 0.813 | 3000 (870) |
| 70000 | 59000 | 36.91 (36.67) | - | 42.19 (41.98) | 0.995 | 1.000 | 0.970 | 0.786 | 3000 (1100) |

The exact index agreed with a brute-force scan on 40 of 40 sampled
candidates at every size. Where the 70K time goes (CPU s, a separate run
with timers around datasketch's calls): LSH inserts 17.9 (70K pool texts in
an insertion session, 37K accepted texts; 51 band keys each), LSH queries
6.2 (59K), signatures 5.5 (``MinHash.generator``: copy and ``update_batch``),
exact verification 5.9 (9.0M candidates, of which 110K pass the length and
shared-word bounds and get an LCS), tokenizing 0.7. Fewer permutations
trade recall for time: num_perm 192 (38 bands of 5) took 26 s CPU at 70K
with recall 0.974.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from tapir.dedup import NearDuplicateFilter, rouge_l, tokenize

ROOT = Path(__file__).resolve().parents[1]
STOP = set("a an the of to in on for and or is are be with by as at from this that it your you i what how why "
           "which who when where can do does me my write give explain list describe".split())


def corpus(n_pool: int, n_candidates: int, seed: int = 0, dup_share: float = 1 / 6) -> tuple[list[str], list[str]]:
    """(pool, candidates), seeded; see the module docstring."""
    rng = random.Random(seed)
    seeds = [json.loads(line)["instruction"] for line in (ROOT / "data" / "seed_instructions.jsonl").open()]
    templates = [s.split() for s in seeds]
    syllables = ["ka", "lo", "mi", "ren", "sa", "tu", "vo", "zel", "qui", "dra", "pen", "sho", "bar", "lin", "fo"]
    vocab = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(30000)})
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(vocab))]
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)

    def word() -> str:
        import bisect

        return vocab[bisect.bisect_left(cum, rng.random() * total)]

    def fresh() -> str:
        out = []
        for tok in rng.choice(templates):
            out.append(tok if tok.lower().strip("?.,!") in STOP or rng.random() < 0.25 else word())
        if rng.random() < 0.3:  # some longer ones, as real instructions have
            out += [word() if rng.random() < 0.7 else rng.choice(list(STOP)) for _ in range(rng.randint(5, 25))]
        return " ".join(out)

    def edited(text: str) -> str:
        toks = text.split()
        rate = rng.uniform(0.0, 0.6)
        out = []
        for tok in toks:
            r = rng.random()
            if r < rate / 4:
                continue  # delete
            if r < rate / 2:
                out.append(word())  # substitute
            elif r < 3 * rate / 4:
                out += [tok, word()]  # insert
            else:
                out.append(tok)
        if len(out) > 2 and rng.random() < rate:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
        return " ".join(out) or text

    pool = [fresh() for _ in range(n_pool)]
    candidates = [edited(rng.choice(pool)) if rng.random() < dup_share else fresh() for _ in range(n_candidates)]
    return pool, candidates


def brute_force(pool_tokens: list[list[str]], text: str, threshold: float) -> bool:
    toks = tokenize(text)
    return any(rouge_l(toks, other) >= threshold for other in pool_tokens)


def timed(method: str, pool: list[str], candidates: list[str], threshold: float, **kw) -> tuple[float, dict]:
    started, cpu = time.perf_counter(), time.process_time()
    f = NearDuplicateFilter(method, threshold, pool, **kw)
    kept = f.accept_many(candidates)
    seconds = time.perf_counter() - started
    return seconds, {"kept": sum(kept), "cpu_s": time.process_time() - cpu, **f.stats}


def recall_precision(pred: list[bool], truth: list[bool]) -> tuple[float, float, int]:
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    recall = tp / (tp + fn) if tp + fn else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    return recall, precision, tp + fn


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # not Linux
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,70000", help="pool sizes, comma-separated")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--num-perm", type=int, default=256, help="MinHash permutations (NearDuplicateFilter num_perm)")
    ap.add_argument("--sample", type=int, default=3000, help="candidates sampled for recall/precision")
    ap.add_argument("--brute", type=int, default=40, help="of those, checked by a brute-force scan of the pool")
    ap.add_argument("--exact-max", type=int, default=10000,
                    help="time the exact rouge index only up to this pool size (it grows about quadratically)")
    args = ap.parse_args(argv)
    t = args.threshold
    load_before = _loadavg()
    rows = []
    for n_pool in [int(s) for s in args.sizes.split(",")]:
        n_cand = round(n_pool * 59 / 70)
        pool, candidates = corpus(n_pool, n_cand, seed=n_pool)
        row = {"pool": n_pool, "candidates": n_cand}
        mh = {"num_perm": args.num_perm}
        row["minhash_s"], st = timed("minhash", pool, candidates, t, **mh)
        row["minhash_kept"], row["minhash_pairs"], row["minhash_cpu_s"] = st["kept"], st["candidates"], st["cpu_s"]
        row["minhash_scored"] = st["scored"]
        row["minhash_nv_s"], st = timed("minhash", pool, candidates, t, verify=False, **mh)
        row["minhash_nv_kept"], row["minhash_nv_cpu_s"] = st["kept"], st["cpu_s"]
        if n_pool <= args.exact_max:
            row["rouge_s"], st = timed("rouge", pool, candidates, t)
            row["rouge_kept"], row["rouge_pairs"] = st["kept"], st["candidates"]
        # recall / precision on a sample, against the fixed pool
        rng = random.Random(1)
        sample = rng.sample(candidates, min(args.sample, len(candidates)))
        truth = NearDuplicateFilter("rouge", t, pool).duplicates(sample)
        pool_tokens = [tokenize(p) for p in pool]
        brute = sample[: args.brute]
        row["exact_checked"] = len(brute)
        row["exact_agrees"] = sum(brute_force(pool_tokens, s, t) == d for s, d in zip(brute, truth))
        for name, kw in (("minhash", mh), ("minhash_nv", {"verify": False, **mh})):
            pred = NearDuplicateFilter("minhash", t, pool, **kw).duplicates(sample)
            row[f"{name}_recall"], row[f"{name}_precision"], row["positives"] = recall_precision(pred, truth)
        row["sample"] = len(sample)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    from importlib.metadata import version

    bands = NearDuplicateFilter("minhash", t, num_perm=args.num_perm)
    print(f"\nnear-duplicate filtering, ROUGE-L F1 >= {t}, {os.cpu_count()} CPUs, load average {load_before} -> "
          f"{_loadavg()}; datasketch {version('datasketch')}, num_perm {args.num_perm}, {bands.bands} bands of "
          f"{bands.rows} rows (candidates = 59/70 of the pool; accept_many, pool construction included)\n")
    head = (f"| {'pool':>6} | {'cands':>6} | {'minhash s (cpu)':>15} | {'exact rouge s':>13} | {'minhash (no verify) s (cpu)':>27} "
            f"| {'kept mh / exact':>15} | {'recall':>6} | {'precision':>9} | {'recall nv':>9} | {'precision nv':>12} "
            f"| {'sample (dups)':>13} | {'exact = brute force':>19} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.strip("|").split("|")) + "|")
    for r in rows:
        exact_s = f"{r['rouge_s']:>13.2f}" if "rouge_s" in r else f"{'-':>13}"
        exact_kept = f"{r['rouge_kept']:>6}" if "rouge_kept" in r else f"{'-':>6}"
        print(f"| {r['pool']:>6} | {r['candidates']:>6} | {r['minhash_s']:>6.2f} ({r['minhash_cpu_s']:>6.2f}) | {exact_s} "
              f"| {r['minhash_nv_s']:>12.2f} ({r['minhash_nv_cpu_s']:>12.2f}) | {r['minhash_kept']:>6} / {exact_kept} "
              f"| {r['minhash_recall']:>6.3f} | {r['minhash_precision']:>9.3f} | {r['minhash_nv_recall']:>9.3f} "
              f"| {r['minhash_nv_precision']:>12.3f} | {r['sample']:>5} ({r['positives']:>4}) "
              f"| {r['exact_agrees']:>8}/{r['exact_checked']:<10} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
