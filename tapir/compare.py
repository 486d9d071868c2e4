"""``tapir compare``: benchmark scores of several models side by side.

Rows are models, grouped by backbone: each backbone's base model first, then
its students (checkpoints ordered by run and round), then models with no
known base. Columns are ``benchmark/task/metric`` from ``benchmark_results``
(by default only headline metrics: rows whose ``meta.primary`` is not
``false`` and whose metric is not bookkeeping such as ``failures``). A
student's "delta vs base" is its score minus its base model's.

A model is found by what the user gives: a run id (a training run brings
all its checkpoints, a benchmark run its model), a checkpoint path, or a
model name as stored by ``tapir bench``. A checkpoint's base is the
``base_model`` of its ``checkpoints`` row; ``--base BASE`` (every other
model) or ``--base MODEL=BASE`` sets it for the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir.bench import model_key
from tapir.errors import TapirError
from tapir.store.db import Store

# Benchmarks in this order first, then the rest alphabetically.
BENCHMARK_ORDER = ("mtbench", "alpacaeval", "lmeval")
# Bookkeeping metrics that are not scores: shown only with --all-metrics.
DIAGNOSTIC_METRICS = frozenset({"failures", "baseline_failures"})


@dataclass
class ModelRow:
    model: str  # the key results are stored under
    label: str
    base: str | None = None
    run_id: str | None = None
    round: int | None = None
    is_base: bool = False
    scores: dict[str, float | None] = field(default_factory=dict)
    stderr: dict[str, float | None] = field(default_factory=dict)
    delta: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Comparison:
    columns: list[str]
    rows: list[ModelRow]

    @property
    def has_delta(self) -> bool:
        return any(r.base and not r.is_base for r in self.rows)


def label_for(model: str) -> str:
    """Paths inside the working directory print relative; anything else as is."""
    if os.path.isabs(model):
        try:
            rel = os.path.relpath(model)
        except ValueError:  # pragma: no cover - other drive on Windows
            return model
        if not rel.startswith(".."):
            return rel
    return model


# --------------------------------------------------------------------------- selecting models


def _checkpoints(store: Store) -> list[dict[str, Any]]:
    if "checkpoints" not in store.db.table_names():
        return []
    return list(store["checkpoints"].rows_where(order_by="run_id, round"))


def _parse_bases(bases: list[str]) -> tuple[str | None, dict[str, str]]:
    default, specific = None, {}
    for item in bases:
        model, sep, base = item.partition("=")
        if sep:
            specific[model_key(model)] = model_key(base)
        elif default is None:
            default = model_key(item)
        else:
            raise TapirError("give one plain --base BASE (for every model), or --base MODEL=BASE per model")
    return default, specific


def _expand(store: Store, ref: str, checkpoints: list[dict[str, Any]]) -> list[ModelRow]:
    """The models one command-line reference stands for."""
    by_path = {model_key(c["path"]): c for c in checkpoints if c.get("path")}

    def from_checkpoint(c: dict[str, Any]) -> ModelRow:
        key = model_key(c["path"])
        base = model_key(c["base_model"]) if c.get("base_model") else None
        return ModelRow(key, label_for(key), base, c["run_id"], c["round"])

    runs = [r["id"] for r in store["runs"].rows_where("id = ? or id like ?", [ref, f"{ref}%"], select="id")]
    if len(ref) >= 6 and len(runs) == 1 or ref in runs:
        run_id = ref if ref in runs else runs[0]
        mine = [c for c in checkpoints if c["run_id"] == run_id]
        if mine:
            return [from_checkpoint(c) for c in mine]
        run = store["runs"].get(run_id)
        config = json.loads(run["config"] or "{}")
        if "benchmark" in config and "model" in config:
            key = model_key(config["model"])
            if key in by_path:
                return [from_checkpoint(by_path[key])]
            return [ModelRow(key, label_for(key))]
        raise TapirError(f"run {run_id} has no checkpoints and is not a benchmark run")
    key = model_key(ref)
    if key in by_path:
        return [from_checkpoint(by_path[key])]
    return [ModelRow(key, label_for(key))]


def select_models(store: Store, refs: list[str], bases: list[str] | None = None) -> list[ModelRow]:
    """Ordered rows: per backbone the base, then its students; then models without a base."""
    checkpoints = _checkpoints(store)
    if refs:
        found = [row for ref in refs for row in _expand(store, ref, checkpoints)]
    else:
        keys = [r[0] for r in store.execute("select model from benchmark_results group by model order by min(id)")]
        found = [row for key in keys for row in _expand(store, key, checkpoints)]
    default, specific = _parse_bases(bases or [])
    explicit_bases = set(specific.values()) | ({default} if default else set())
    models: dict[str, ModelRow] = {}
    for row in found:
        models.setdefault(row.model, row)
    for row in models.values():
        if row.base is None and row.model not in explicit_bases:
            row.base = specific.get(row.model) or default
        if row.base == row.model:
            row.base = None
    backbones = list(dict.fromkeys(r.base for r in models.values() if r.base))
    ordered: list[ModelRow] = []
    for base in backbones:
        ordered.append(ModelRow(base, label_for(base), is_base=True))
        students = [r for r in models.values() if r.base == base]
        run_order = {rid: i for i, rid in enumerate(dict.fromkeys(r.run_id for r in students))}
        students.sort(key=lambda r: (run_order[r.run_id], -1 if r.round is None else r.round))
        ordered.extend(students)
    ordered.extend(r for r in models.values() if not r.base and r.model not in backbones)
    if not ordered:
        raise TapirError("nothing to compare: no benchmark results in the store (run `tapir bench` first)")
    return ordered


# --------------------------------------------------------------------------- the table


def _column_order(bench_min_id: dict[tuple[str, str, str], int]) -> list[tuple[str, str, str]]:
    def rank(col: tuple[str, str, str]):
        bench = col[0]
        first = BENCHMARK_ORDER.index(bench) if bench in BENCHMARK_ORDER else len(BENCHMARK_ORDER)
        return (first, bench, bench_min_id[col])

    return sorted(bench_min_id, key=rank)


def build(store: Store, refs: list[str] | None = None, bases: list[str] | None = None, *,
          all_metrics: bool = False, benchmarks: list[str] | None = None) -> Comparison:
    """The comparison table for ``refs`` (all stored models when empty)."""
    rows = select_models(store, list(refs or []), bases)
    keys = list(dict.fromkeys(r.model for r in rows))
    marks = ",".join("?" * len(keys))
    results = store.execute(
        f"select id, benchmark, model, task, metric, value, stderr, meta from benchmark_results "
        f"where model in ({marks}) order by id",
        keys,
    ).fetchall()
    first_id: dict[tuple[str, str, str], int] = {}
    values: dict[tuple[str, tuple[str, str, str]], tuple[float | None, float | None]] = {}
    for rid, bench, model, task, metric, value, stderr, meta in results:
        if benchmarks and bench not in benchmarks:
            continue
        primary = json.loads(meta).get("primary", True) if meta else True
        if not all_metrics and (primary is False or metric in DIAGNOSTIC_METRICS):
            continue
        col = (bench, task, metric)
        first_id.setdefault(col, rid)
        values[(model, col)] = (value, stderr)
    columns = _column_order(first_id)
    names = ["/".join(c) for c in columns]
    by_model = {r.model: r for r in rows}
    for row in rows:
        for col, name in zip(columns, names):
            value, stderr = values.get((row.model, col), (None, None))
            row.scores[name] = value
            row.stderr[name] = stderr
    for row in rows:
        if row.is_base or not row.base:
            continue
        base = by_model[row.base]
        for name in names:
            a, b = row.scores[name], base.scores[name]
            row.delta[name] = None if a is None or b is None else a - b
    return Comparison(names, rows)


# --------------------------------------------------------------------------- output


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ident(row: ModelRow) -> list[str]:
    base = "(base)" if row.is_base else (label_for(row.base) if row.base else "")
    return [row.label, base, row.run_id or "", "" if row.round is None else str(row.round)]


_HEAD = ["model", "base", "run", "round"]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * len(_HEAD) + ["---:"] * (len(header) - len(_HEAD))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def to_markdown(table: Comparison, delta: bool = True) -> str:
    out = ["## Scores", "", _md_table(_HEAD + table.columns, [
        _ident(r) + [_cell(r.scores[c]) for c in table.columns] for r in table.rows
    ])]
    if delta and table.has_delta:
        students = [r for r in table.rows if r.base and not r.is_base]
        out += ["", "## Delta vs base", "", _md_table(_HEAD + table.columns, [
            _ident(r) + [_cell(r.delta[c], signed=True) for c in table.columns] for r in students
        ])]
    return "\n".join(out) + "\n"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def to_csv(table: Comparison, delta: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with_delta = delta and table.has_delta
    writer.writerow(_HEAD + table.columns + ([f"delta {c}" for c in table.columns] if with_delta else []))
    for r in table.rows:
        cells = _ident(r) + [_raw(r.scores[c]) for c in table.columns]
        if with_delta:
            cells += [_raw(r.delta.get(c)) for c in table.columns]
        writer.writerow(cells)
    return buf.getvalue()


def to_json(table: Comparison, delta: bool = True) -> str:
    rows = []
    for r in table.rows:
        item = {"model": r.model, "label": r.label, "base": r.base, "is_base": r.is_base, "run_id": r.run_id,
                "round": r.round, "scores": r.scores, "stderr": r.stderr}
        if delta and r.delta:
            item["delta"] = r.delta
        rows.append(item)
    return json.dumps({"columns": table.columns, "rows": rows}, indent=2) + "\n"


FORMATS = {"markdown": to_markdown, "csv": to_csv, "json": to_json}


def render(table: Comparison, fmt: str = "markdown", delta: bool = True) -> str:
    if fmt not in FORMATS:
        raise TapirError(f"unknown format '{fmt}'. Formats: {', '.join(FORMATS)}")
    return FORMATS[fmt](table, delta)


def plot(table: Comparison, path: str | Path) -> Path:
    """One small bar chart per column, a bar per model (base models hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not table.columns:
        raise TapirError("nothing to plot: no benchmark columns")
    n = len(table.columns)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    labels = [r.label for r in table.rows]
    for ax, col in zip(axes.flat, table.columns):
        heights = [r.scores[col] if r.scores[col] is not None else float("nan") for r in table.rows]
        bars = ax.bar(range(len(labels)), heights, color=[f"C{i % 10}" for i in range(len(labels))])
        for bar, row in zip(bars, table.rows):
            if row.is_base:
                bar.set_hatch("//")
        ax.set_title(col, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
