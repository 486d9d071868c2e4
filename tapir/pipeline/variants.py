"""Several runs of one config: Table 5's ablations and several student
backbones. Each variant is the config with a few keys changed; they run one
after another on the same database, so every stage they share (same key:
ingest, the teacher's answers, S0, the judgments, the classification) is
computed once and reused by the others.

Table 5's settings, as tapir variants (docs/paper.md says where they depart):

* ``full-alpaca``: S0, the student fine-tuned on the teacher's answers to all of D;
* ``seed-alpaca``: trained from the base model on D_S alone (no expansion,
  no rewriting, no task re-sampling);
* ``seed-alpaca-rw``: the same on D_S with rewritten answers;
* ``direct-expansion``: D_S expanded to the full size in one step, without
  task-aware re-sampling or rewriting;
* ``single-round``: all of TAPIR in one round of the full size;
* ``full``: the config as it is (TAPIR, all rounds).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir import progress


@dataclass
class Variant:
    label: str
    edits: dict[str, Any]  # dotted key -> value
    final_stage: tuple[str, int] | None = None  # None: the last train stage


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def ablations(data: dict) -> list[Variant]:
    cur = data.get("curriculum", {})
    total = sum(cur.get("expand_per_round", [19000, 20000, 20000]))
    skip = list(data.get("recipe", {}).get("skip", []))
    one = {"curriculum.rounds": 1, "curriculum.alpha_step": 0.0}
    seed_only = {**one, "curriculum.expand_per_round": [0], "curriculum.start_from": "base",
                 "curriculum.alpha": 1.0, "curriculum.sampling": "natural"}
    return [
        Variant("full-alpaca", {}, ("train", 0)),
        Variant("seed-alpaca", {**seed_only, "recipe.skip": sorted({*skip, "rewrite", "resample", "expand"})}),
        Variant("seed-alpaca-rw", {**seed_only, "recipe.skip": sorted({*skip, "resample", "expand"})}),
        Variant("direct-expansion", {**one, "curriculum.expand_per_round": [total], "curriculum.start_from": "base",
                                     "curriculum.alpha": 1.0, "curriculum.sampling": "natural",
                                     "recipe.skip": sorted({*skip, "rewrite", "resample"})}),
        Variant("single-round", {**one, "curriculum.expand_per_round": [total]}),
        Variant("full", {}),
    ]


def students(data: dict) -> list[Variant]:
    """One variant per entry of ``students`` (each backbone beside its base)."""
    out = []
    for ref in data.get("students") or []:
        model = ref["model"] if isinstance(ref, dict) else str(ref)
        out.append(Variant(f"student:{model}", {"student": ref if isinstance(ref, dict) else {"model": ref},
                                                "students": []}))
    return out


def variant_config(data: dict, variant: Variant, kind: str) -> dict:
    cfg = copy.deepcopy(data)
    for key, value in variant.edits.items():
        _set(cfg, key, value)
    if not variant.edits:
        cfg.pop("students", None)
    cfg["name"] = f"{data['name']}/{kind}:{variant.label}"
    safe = variant.label.replace("/", "_").replace(":", "_")
    cfg["output_dir"] = str(Path(data.get("output_dir", "tapir-out")) / f"{kind}-{safe}")
    return cfg


@dataclass
class VariantResult:
    variant: Variant
    run_id: str
    checkpoint: str | None
    heldout_nll: float | None
    base_nll: float | None
    outcome: Any
    # evaluation.benchmarks on the final checkpoint: "benchmark/task/metric" -> value
    benchmarks: dict[str, float] = field(default_factory=dict)


def run_variants(config_path: str | Path, variants: list[Variant], kind: str, db: str | None = None,
                 retry: bool | None = None, overrides: list[str] | None = None) -> list[VariantResult]:
    from tapir.config import apply_overrides, read_yaml
    from tapir.pipeline.preflight import check
    from tapir.pipeline.runner import distill

    path = Path(config_path)
    base_dir = path.resolve().parent
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
    configs = [(v, variant_config(data, v, kind)) for v in variants]
    for v, cfg in configs:  # every variant passes preflight before the first one runs
        check(cfg, db, base_dir=base_dir)
    results = []
    for v, cfg in configs:
        progress.say(f"== {kind} {v.label}")
        outcome = distill(cfg, db, retry=retry, base_dir=base_dir)
        final = v.final_stage or max((n for n in outcome.engine.by_node if n[0] == "train"), key=lambda n: n[1])
        checkpoint = outcome.info(*final).get("path")
        nll = outcome.engine.results.get(("evaluate", final[1]))
        base = outcome.engine.results.get(("evaluate_base", 0))
        bench = outcome.engine.results.get(("benchmarks", final[1]))
        scores = {f"{name}/{metric}": value for name, metrics in ((bench.info if bench else {}).get("scores") or {}
                                                                  ).items() for metric, value in metrics.items()}
        results.append(VariantResult(v, outcome.run.id, checkpoint, nll.info.get("nll") if nll else None,
                                     base.info.get("nll") if base else None, outcome, scores))
    return results


def table(results: list[VariantResult], benchmarks: dict[str, dict[str, float]] | None = None) -> list[str]:
    """One row per variant: its run, final checkpoint, held-out loss and the
    configured benchmarks' scores (``benchmarks`` overrides: label -> scores)."""
    benchmarks = benchmarks or {r.variant.label: r.benchmarks for r in results}
    names = sorted({b for scores in benchmarks.values() for b in scores})
    head = f"{'setting':<20} {'run':<18} {'held-out nll':>13} {'vs base':>9}" + "".join(f" {n:>14}" for n in names)
    lines = [head, "-" * len(head)]
    for r in results:
        nll = f"{r.heldout_nll:.4f}" if r.heldout_nll is not None else "n/a"
        delta = f"{r.heldout_nll - r.base_nll:+.4f}" if r.heldout_nll is not None and r.base_nll is not None else ""
        scores = benchmarks.get(r.variant.label, {})
        cells = "".join(f" {scores[n]:>14.4f}" if n in scores else f" {'n/a':>14}" for n in names)
        lines.append(f"{r.variant.label:<20} {r.run_id:<18} {nll:>13} {delta:>9}{cells}")
    return lines
