"""Eq. 3 at the paper's sizes, simulated without a model: how much of each
round's hard set D_P a round trains on, and what it costs, under
``curriculum.sampling: task-draw`` (the old default: |D_P| pairs drawn with
replacement by task probability) and ``task`` (every pair at least once,
up-sampled to the task mix), optionally with ``--upsample-limit``.

    python benchmarks/sim_eq3_coverage.py [--seed 42] [--seed-mix alpaca|target] [--upsample-limit 2]

The numbers of the run, as the pipeline would make them: D_S = 11K seeds
with a task mix (``--seed-mix alpaca``: a skewed, Alpaca-like mix written
below, an assumption since the paper gives Fig. 5a only as a picture;
``target``: already in Appendix A's mix), expansions of 19K / 20K / 20K
drawn by ``resample`` with Appendix A's weights (tapir/pipeline/taskmix.py
``allocate``, so the new pairs follow the weights over the types present),
the easy remainder D \\ D_S of 41K, batch 32, 3 epochs (configs/paper.yaml).
It calls tapir's own ``task_draws``, ``task_cover`` and ``coverage``.
"mix gap": the largest difference, in percentage points, between a task
type's share of the hard examples and its Eq. 3 target share.
"""

from __future__ import annotations

import argparse
import math

from tapir.pipeline.taskmix import allocate, coverage, task_cover, task_draws
from tapir.roles import Item
from tapir.tasks import TASK_TYPES, paper_weights

# An Alpaca-like skew (percent): writing and general knowledge dominate, math,
# code and reasoning are rare. An assumption for the simulation, not data.
ALPACA_LIKE = {
    "Writing": 18, "Others": 10, "Common-Sense": 8, "Paraphrase": 6, "Grammar": 5, "Technology": 5,
    "Computer Science": 5, "Reasoning": 4, "Math": 3, "Code Generation": 3, "Literature": 3, "Health": 3,
    "Economy": 3, "Entertainment": 2, "Biology": 2, "History": 2, "Physics": 2, "Chemistry": 1.5, "Ecology": 1.5,
    "Art": 1.5, "Music": 1, "Sport": 1, "Law": 1, "Medicine": 1, "Philosophy": 1, "Ethics": 1,
    "Complex Format": 1, "Multilingual": 1, "Roleplay": 1, "Counterfactual": 1, "Code Debug": 0.5, "Toxicity": 0.5,
}
SEEDS, EXPAND, EASY, BATCH, EPOCHS = 11_000, (19_000, 20_000, 20_000), 41_000, 32, 3


def items_of(counts: dict[str, int], prefix: str) -> list[Item]:
    return [Item(f"{prefix}-{t}-{k}", "x", output="y", task_type=t) for t, n in counts.items() for k in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--seed-mix", choices=("alpaca", "target"), default="alpaca")
    ap.add_argument("--upsample-limit", type=float, default=None)
    args = ap.parse_args()
    weights = paper_weights()
    mix = ALPACA_LIKE if args.seed_mix == "alpaca" else {t: weights[t] for t in TASK_TYPES}
    seeds = items_of(allocate(SEEDS, {t: mix.get(t, 0) / sum(mix.values()) for t in TASK_TYPES}, TASK_TYPES), "s")
    seed_ids = {it.id for it in seeds}
    pool = list(seeds)
    print(f"seed mix {args.seed_mix}; D_S {len(seeds)}; easy {EASY}; batch {BATCH} x {EPOCHS} epochs"
          + (f"; upsample_limit {args.upsample_limit}" if args.upsample_limit else ""))
    head = (f"{'round':>5} {'sampling':<10} {'|D_P|':>7} {'hard ex.':>9} {'unique used':>12} {'unused':>7} "
            f"{'seeds unused':>13} {'worst type used':>16} {'mix gap':>8} {'steps':>7}")
    print(head)
    print("-" * len(head))
    for r, n_new in enumerate(EXPAND, start=1):
        present = sorted({it.task_type for it in pool})
        pool += items_of(allocate(n_new, weights, present), f"e{r}")
        for name, trained in (("task-draw", task_draws(pool, weights, args.seed * 100 + r)),
                              ("task", task_cover(pool, weights, args.seed * 100 + r, args.upsample_limit))):
            cov = coverage(pool, trained, weights, seed_ids)
            worst = min(cov["per_task"].items(), key=lambda kv: kv[1]["used"] / kv[1]["available"])
            steps = math.ceil((len(trained) + EASY) / BATCH) * EPOCHS
            gap = max(abs(v["share"] - v["target"]) for v in cov["per_task"].values())  # largest, in points
            print(f"{r:>5} {name:<10} {cov['available']:>7} {cov['examples']:>9} "
                  f"{cov['used']:>6} ({100 * cov['fraction']:4.1f}%) "
                  f"{100 * (1 - cov['fraction']):6.1f}% "
                  f"{100 * (1 - cov['seeds_used'] / cov['seeds_available']):12.1f}% "
                  f"{worst[0][:10]:>10} {100 * worst[1]['used'] / worst[1]['available']:4.0f}% "
                  f"{100 * gap:7.1f}p {steps:>7}")


if __name__ == "__main__":
    main()
