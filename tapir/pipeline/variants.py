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
    # What the setting trained (setting_training): examples, optimizer steps, tokens, rounds.
    training: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None  # curriculum.max_steps set by --match-steps (None: not matched)


def setting_training(trains: dict[int, dict[str, Any]], final_round: int) -> dict[str, Any]:
    """A setting's own training, from its train stages' info (round -> info):
    the curriculum rounds 1..``final_round`` summed (S0 is shared by the
    settings that start from it and is counted where it is the result:
    ``final_round`` 0, full-alpaca). Examples count repeats and zero-weight
    examples are not in a training set; None where a trainer did not report."""
    rounds = [0] if final_round == 0 else [r for r in sorted(trains) if 1 <= r <= final_round]
    infos = [trains[r] for r in rounds if r in trains]

    def total(key: str) -> int | None:
        values = [i.get(key) for i in infos]
        return sum(values) if infos and all(isinstance(v, (int, float)) for v in values) else None

    return {"rounds": rounds, "examples": total("examples"), "steps": total("steps"),
            "tokens": total("train_tokens")}


def match_steps_of(results: dict[str, dict[str, Any]]) -> int:
    """The step count every setting is matched to (``--match-steps``): the
    full setting's optimizer steps over its curriculum rounds."""
    steps = results.get("full", {}).get("steps")
    if not isinstance(steps, int) or steps < 1:
        from tapir.errors import TapirError

        raise TapirError("--match-steps: the full setting's trainer reported no optimizer step count ('steps' "
                         "in the train stages' info), so there is nothing to match the other settings to")
    return steps


def check_match_steps(data: dict) -> None:
    """--match-steps sets ``max_steps`` on the trainer: refuse, before anything
    runs, a trainer whose options have no ``max_steps``."""
    from tapir.errors import ConfigError
    from tapir.plugins import registry

    name = (data.get("trainer") or {}).get("name", "hf")
    fields = registry().get("trainers", name).options_model().model_fields
    if "max_steps" not in fields:
        raise ConfigError(f"tapir ablate --match-steps: trainer '{name}' declares no max_steps option, so the "
                          f"settings' steps cannot be matched; run without --match-steps, or use trainer hf / trl")


def run_variants(config_path: str | Path, variants: list[Variant], kind: str, db: str | None = None,
                 retry: bool | None = None, overrides: list[str] | None = None,
                 match_steps: bool = False) -> list[VariantResult]:
    """Run each variant of CONFIG on one database, in order. ``match_steps``
    (Table 5's ablations): the ``full`` variant runs first, then every other
    setting whose result is a curriculum round gets ``curriculum.max_steps``
    so that its rounds take as many optimizer steps as the full setting's
    (full-alpaca, S0 itself, is shared and not re-trained)."""
    from tapir.config.loading import apply_overrides, config_source, parse, read_yaml
    from tapir.errors import ConfigError
    from tapir.pipeline.preflight import check
    from tapir.pipeline.runner import distill

    path = Path(config_path)
    base_dir = path.resolve().parent
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
    # The config as written first: its mistakes named with its file (each variant is a dict, 'config').
    parse(data, source=config_source(path, overrides))
    configs = [(v, variant_config(data, v, kind)) for v in variants]
    matched = {v.label for v, _ in configs if match_steps and v.label != "full" and v.final_stage is None}
    if match_steps:
        check_match_steps(data)
        if "full" not in {v.label for v, _ in configs}:
            raise ConfigError("--match-steps matches every setting to the full setting's steps: no 'full' setting")
    for v, cfg in configs:  # every variant passes preflight before the first one runs
        try:
            check({**cfg, "curriculum": {**cfg.get("curriculum", {}), "max_steps": 1}} if v.label in matched
                  else cfg, db, base_dir=base_dir)
        except ConfigError as exc:
            raise ConfigError(f"{path}, {kind} setting {v.label}:\n{exc}") from None
    order = sorted(configs, key=lambda vc: vc[0].label != "full") if match_steps else configs
    done: dict[str, VariantResult] = {}
    for v, cfg in order:
        max_steps = None
        if v.label in matched:
            target = match_steps_of({"full": done["full"].training})
            rounds = int(cfg.get("curriculum", {}).get("rounds", 3))
            max_steps = -(-target // rounds)
            cfg = {**cfg, "curriculum": {**cfg.get("curriculum", {}), "max_steps": max_steps}}
        progress.say(f"== {kind} {v.label}" + (f" (curriculum.max_steps {max_steps}: matched to full)"
                                              if max_steps else ""))
        outcome = distill(cfg, db, retry=retry, base_dir=base_dir)
        final = v.final_stage or max((n for n in outcome.engine.by_node if n[0] == "train"), key=lambda n: n[1])
        checkpoint = outcome.info(*final).get("path")
        nll = outcome.engine.results.get(("evaluate", final[1]))
        base = outcome.engine.results.get(("evaluate_base", 0))
        bench = outcome.engine.results.get(("benchmarks", final[1]))
        scores = {f"{name}/{metric}": value for name, metrics in ((bench.info if bench else {}).get("scores") or {}
                                                                  ).items() for metric, value in metrics.items()}
        trains = {n[1]: outcome.info(*n) for n in outcome.engine.by_node if n[0] == "train"}
        done[v.label] = VariantResult(v, outcome.run.id, checkpoint, nll.info.get("nll") if nll else None,
                                      base.info.get("nll") if base else None, outcome, scores,
                                      setting_training(trains, final[1]), max_steps)
    return [done[v.label] for v, _ in configs]


def table(results: list[VariantResult], benchmarks: dict[str, dict[str, float]] | None = None) -> list[str]:
    """One row per variant: its run, what it trained (examples, optimizer
    steps, tokens), final checkpoint's held-out loss and the configured
    benchmarks' scores (``benchmarks`` overrides: label -> scores)."""
    benchmarks = benchmarks or {r.variant.label: r.benchmarks for r in results}
    names = sorted({b for scores in benchmarks.values() for b in scores})
    head = (f"{'setting':<20} {'run':<18} {'examples':>9} {'steps':>7} {'tokens':>10} {'held-out nll':>13} "
            f"{'vs base':>9}" + "".join(f" {n:>14}" for n in names))
    lines = [head, "-" * len(head)]
    for r in results:
        nll = f"{r.heldout_nll:.4f}" if r.heldout_nll is not None else "n/a"
        delta = f"{r.heldout_nll - r.base_nll:+.4f}" if r.heldout_nll is not None and r.base_nll is not None else ""
        scores = benchmarks.get(r.variant.label, {})
        cells = "".join(f" {scores[n]:>14.4f}" if n in scores else f" {'n/a':>14}" for n in names)
        t = r.training

        def cell(key: str) -> str:
            return "n/a" if t.get(key) is None else str(t[key])

        lines.append(f"{r.variant.label:<20} {r.run_id:<18} {cell('examples'):>9} {cell('steps'):>7} "
                     f"{cell('tokens'):>10} {nll:>13} {delta:>9}{cells}")
    if any(r.max_steps for r in results):
        lines.append("steps matched to the full setting (--match-steps): "
                     + ", ".join(f"{r.variant.label} max_steps {r.max_steps}" for r in results if r.max_steps))
    return lines
