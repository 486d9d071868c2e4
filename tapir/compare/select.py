"""Which models a comparison shows, in which order, under which labels.

A reference is, first match wins: a run id or a unique id prefix (6+
characters; a training run brings all its checkpoints, a benchmark run
only that run), a checkpoint path or a model name as stored by ``tapir
bench``, a run name (the latest run of that name), the common name of a
family of variant runs (``NAME`` for the runs ``NAME/ablation:SETTING`` and
``NAME/student:MODEL`` of ``tapir ablate`` and ``students:``), or a study
name (runs whose config has ``study: NAME`` or ``study: {name: NAME}``).

A checkpoint's row is labelled ``backbone · setting · S_r``: the short name
of its base model, its run's setting (the ablation setting or the study's
``setting`` when the run has one, else the run's name) and its round. Rows
are ordered by backbone, each base first, then by setting and round; models
with no known base come last, by label.
"""

from __future__ import annotations

import re
from typing import Any

from tapir.bench import model_key
from tapir.compare.rows import NOT_MODEL_BENCHMARKS, SEP, ModelRow, UnknownReference, label_for, short_name
from tapir.errors import TapirError
from tapir.store.benchmarks import scored_models, unscored_models
from tapir.store.checkpoints import all_checkpoints
from tapir.store.db import Store
from tapir.store.runs import runs_in_order
from tapir.store.stages import has_keys, train_stage_keys

# ``NAME/KIND:LABEL``: a variant run of ``tapir ablate`` (kind ablation) or of ``students:`` (kind student).
_VARIANT = re.compile(r"^(?P<name>.+?)/(?P<kind>[a-z]+):(?P<label>.+)$")


def run_setting(name: str | None, config: dict[str, Any] | None) -> str | None:
    """What a run stands for in a label: its study setting, its ablation
    setting, else its name (a student variant: the family's name)."""
    study = (config or {}).get("study")
    if isinstance(study, dict) and study.get("setting"):
        return str(study["setting"])
    match = _VARIANT.match(name or "")
    if match:
        return match["label"] if match["kind"] == "ablation" else match["name"]
    return name or None


def study_of(config: dict[str, Any] | None) -> str | None:
    """The study a run's config names (``study: NAME`` or ``study: {name: NAME}``)."""
    study = (config or {}).get("study")
    if isinstance(study, dict):
        study = study.get("name")
    return str(study) if study else None


class _Runs:
    """The store's runs and which run trained which checkpoint."""

    def __init__(self, store: Store):
        self.store = store
        self.rows: dict[str, dict[str, Any]] = {}
        for rid, name, config, created in runs_in_order(store):
            self.rows[rid] = {"id": rid, "name": name, "config": config, "created_at": created}
        # a pipeline run's checkpoints are stored under its train stages' keys
        self.by_stage_key: dict[str, list[str]] = {}
        if has_keys(store):  # an old schema read as it is has no stage keys
            for rid, key in train_stage_keys(store):
                self.by_stage_key.setdefault(key, [])
                if rid not in self.by_stage_key[key]:
                    self.by_stage_key[key].append(rid)
        self.checkpoints = all_checkpoints(store)

    def trained_by(self, key: str) -> list[str]:
        """Runs whose checkpoint rows carry ``key`` (their train stage key, or their id)."""
        runs = list(self.by_stage_key.get(key, []))
        if key in self.rows and key not in runs:
            runs.insert(0, key)
        order = {rid: i for i, rid in enumerate(self.rows)}  # created first, first
        return sorted(runs, key=lambda r: order.get(r, -1))

    def keys_of(self, run_id: str) -> set[str]:
        return {run_id} | {k for k, runs in self.by_stage_key.items() if run_id in runs}

    def by_name(self, name: str) -> list[str]:
        """The latest run named ``name``, else the latest run of each variant ``name/KIND:LABEL``,
        else the latest run of each name in study ``name``."""
        exact = [r for r in self.rows.values() if r["name"] == name]
        if exact:
            return [exact[-1]["id"]]
        for chosen in ([r for r in self.rows.values() if (m := _VARIANT.match(r["name"] or "")) and m["name"] == name],
                       [r for r in self.rows.values() if study_of(r["config"]) == name]):
            if chosen:
                latest = {r["name"]: r["id"] for r in chosen}  # created order: a later run of a name wins
                return list(latest.values())
        return []


def _parse_bases(bases: list[str]) -> tuple[str | None, dict[str, str]]:
    default, specific = None, {}
    for item in bases:
        model, sep, base = item.partition("=")
        if sep and not (model.strip() and base.strip()) or not item.strip():
            # "=x" was ignored and "m1=" made the working directory the base model
            raise UnknownReference(f"--base {item!r}: give BASE (for every model) or MODEL=BASE, both names "
                                   f"non-empty, e.g. --base hf:org/base or --base my-student=hf:org/base")
        if sep:
            specific[model_key(model)] = model_key(base)
        elif default is None:
            default = model_key(item)
        else:
            raise TapirError("give one plain --base BASE (for every model), or --base MODEL=BASE per model")
    return default, specific


def stored_models(store: Store) -> list[str]:
    """Models with benchmark results (classifier rows are not models), first stored first."""
    return scored_models(store, NOT_MODEL_BENCHMARKS)


def _from_checkpoint(runs: _Runs, c: dict[str, Any], run_id: str | None = None) -> ModelRow:
    """A checkpoint's row; its run is ``run_id`` when the reference named one, else the first run that trained it."""
    key = model_key(c["path"])
    base = model_key(c["base_model"]) if c.get("base_model") else None
    rid = run_id or next(iter(runs.trained_by(c["scope"])), None)
    run = runs.rows.get(rid or "")
    row = ModelRow(key, label_for(key), base, c["scope"], c["round"])
    if run:
        row.run_name, row.setting = run["name"], run_setting(run["name"], run["config"])
        row.train_run = run["id"]
    return row


def _last_round(setting: str | None) -> int | None:
    """The last round that is a Table 5 setting's result (full-alpaca: S0, though
    its run trains the whole recipe), None for any other setting."""
    from tapir.pipeline.variants import ablations

    for v in ablations({}):
        if v.label == setting and v.final_stage and v.final_stage[0] == "train":
            return v.final_stage[1]
    return None


def _from_run(runs: _Runs, run_id: str, by_path: dict[str, dict[str, Any]]) -> list[ModelRow]:
    keys = runs.keys_of(run_id)
    run = runs.rows[run_id]
    last = _last_round(run_setting(run["name"], run["config"]))
    mine = [c for c in runs.checkpoints if c["scope"] in keys and (last is None or c["round"] <= last)]
    if mine:
        return [_from_checkpoint(runs, c, run_id) for c in mine]
    config = runs.rows[run_id]["config"]
    if "benchmark" in config and "model" in config:
        key = model_key(config["model"])
        row = _from_checkpoint(runs, by_path[key]) if key in by_path else ModelRow(key, label_for(key))
        row.bench_run = run_id
        return [row]
    raise TapirError(f"run {run_id} has no checkpoints and is not a benchmark run")


def _expand(runs: _Runs, ref: str, models: set[str]) -> list[ModelRow] | None:
    """The models one command-line reference stands for (None: unknown)."""
    by_path = {model_key(c["path"]): c for c in runs.checkpoints if c.get("path")}
    if ref in runs.rows:
        return _from_run(runs, ref, by_path)
    prefixed = [rid for rid in runs.rows if rid.startswith(ref)] if len(ref) >= 6 else []
    if len(prefixed) == 1:
        return _from_run(runs, prefixed[0], by_path)
    if len(prefixed) > 1:
        raise UnknownReference(f"run id prefix '{ref}' is ambiguous: {', '.join(prefixed)}; give more characters")
    key = model_key(ref)
    if key in by_path:
        return [_from_checkpoint(runs, by_path[key])]
    if key in models:
        return [ModelRow(key, label_for(key))]
    named = runs.by_name(ref)
    if named:
        out = []
        for rid in named:
            try:
                out.extend(_from_run(runs, rid, by_path))
            except TapirError:
                if len(named) == 1:
                    raise
        return out
    return None


def _unknown(store: Store, refs: list[str], models: list[str]) -> UnknownReference:
    lines = []
    classifier = unscored_models(store, NOT_MODEL_BENCHMARKS)
    for ref in refs:
        if model_key(ref) in classifier:
            lines.append(f"'{ref}' has classifier results only (tapir classifier eval), which are not model scores")
        else:
            lines.append(f"unknown model, run or checkpoint '{ref}'")
    shown = [label_for(m) for m in models[:20]] + (["..."] if len(models) > 20 else [])
    lines.append("Stored models: " + (", ".join(shown) if shown else "none (run `tapir bench` first)")
                 + "; or give a run id or name (`tapir runs`), a study name or a checkpoint path.")
    return UnknownReference("\n".join(lines))


def _stored_rows(runs: _Runs, stored: list[str]) -> list[ModelRow]:
    """Every stored model: checkpoints under their run's label, the rest as stored."""
    by_path = {model_key(c["path"]): c for c in runs.checkpoints if c.get("path")}
    return [_from_checkpoint(runs, by_path[m]) if m in by_path else ModelRow(m, label_for(m)) for m in stored]


def _distinct_labels(rows: list[ModelRow]) -> None:
    """Two checkpoints under one label (two runs of one name: a re-run with
    an edited config) get their training run's id prefix: ``... · S1 [3f2c9a]``."""
    by_label: dict[str, list[ModelRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for same in by_label.values():
        if len(same) > 1:
            for row in same:
                row.label += f" [{(row.train_run or row.run_id or row.model)[:6]}]"


def select_models(store: Store, refs: list[str], bases: list[str] | None = None) -> list[ModelRow]:
    """Ordered rows: per backbone (by short name) its base, then its students
    by setting and round; then the models without a base, by label."""
    runs = _Runs(store)
    stored = stored_models(store)
    known = set(stored)
    found: list[ModelRow] = []
    unknown = []
    if not refs:
        found = _stored_rows(runs, stored)
    for ref in refs:
        rows = _expand(runs, ref, known)
        if rows is None:
            unknown.append(ref)
        else:
            found.extend(rows)
    if unknown:
        raise _unknown(store, unknown, stored)
    default, specific = _parse_bases(bases or [])
    explicit_bases = set(specific.values()) | ({default} if default else set())
    trained_bases = {model_key(c["base_model"]) for c in runs.checkpoints if c.get("base_model")}
    models: dict[str, ModelRow] = {}
    for row in found:
        have = models.get(row.model)
        if have is None:
            models[row.model] = row
        elif have.bench_run and have.bench_run != row.bench_run:
            have.bench_run = None if row.bench_run is None else have.bench_run  # a plain name: every run
    for row in models.values():
        if row.base is None and row.model not in explicit_bases:
            row.base = specific.get(row.model) or default
        if row.base == row.model:
            row.base = None
        row.relabel()
        if not row.base and row.round is None and row.model in trained_bases:
            row.label = f"{short_name(row.model)}{SEP}base"  # a backbone asked for without its students
    _distinct_labels(list(models.values()))
    backbones = sorted(dict.fromkeys(r.base for r in models.values() if r.base),
                       key=lambda b: (short_name(b).lower(), b))
    ordered: list[ModelRow] = []
    for base in backbones:
        ordered.append(ModelRow(base, "", is_base=True))
        ordered[-1].relabel()
        ordered.extend(sorted((r for r in models.values() if r.base == base), key=ModelRow.order_key))
    ordered.extend(sorted((r for r in models.values() if not r.base and r.model not in backbones),
                          key=ModelRow.order_key))
    if not ordered:
        raise TapirError("nothing to compare: no benchmark results in the store (run `tapir bench` first)")
    return ordered
