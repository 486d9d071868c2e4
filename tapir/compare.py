"""``tapir compare``: benchmark scores of several models side by side, truthfully.

One section per benchmark; in it, **one row per benchmark run** (a model
and its settings: the run id hashes benchmark, model and options), naming
that run. Rows of two runs are never merged: the same model with another
judge, a subset or other options is another row. Every row shows the
run's status, settings, subset (``full`` or e.g. ``limit=10``), judge model
and mode, data version, ``n`` (items scored) and failures (items that could
not be scored); a value an old stored run did not record shows as ``?``.

Rows are models only: results written by ``tapir classifier eval``
(benchmark ``classifier``, no benchmark run) are listed apart, never as a
model. Within a section, each backbone's base model comes first, then its
students (checkpoints ordered by training run and round), then models with
no known base. A student's "delta vs base" is against the base's run with
the same settings (options, subset, judge, judge mode, data version; options
that do not change scores such as ``batch_size`` are ignored); when there is
none the delta is empty and the row says why. A subset run is thus never
compared with a full run.

A model is found by what the user gives: a run id (a training run brings
all its checkpoints, a benchmark run only that run), a checkpoint path, or a
model name as stored by ``tapir bench``. A name that is none of these is an
error listing the stored models (:class:`UnknownReference`). A checkpoint's
base is the ``base_model`` of its ``checkpoints`` row; ``--base BASE`` (every
other model) or ``--base MODEL=BASE`` sets it for the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir.bench import failure_summary, model_key, subset_label
from tapir.errors import TapirError
from tapir.store.db import Store

# Benchmarks in this order first, then the rest alphabetically.
BENCHMARK_ORDER = ("mtbench", "alpacaeval", "lmeval")
# Bookkeeping metrics that are not scores: shown only with --all-metrics.
DIAGNOSTIC_METRICS = frozenset({"failures", "baseline_failures"})
# Results that are not model scores (``tapir classifier eval``).
NOT_MODEL_BENCHMARKS = frozenset({"classifier"})
# Options that do not change scores: ignored when matching a student's run with its base's.
NEUTRAL_OPTIONS = frozenset({"batch_size", "max_batch_size", "output_dir", "use_cache", "log_samples", "device",
                             "concurrency"})
MISSING = "?"  # what an old stored run did not record

_MODEL_ROWS = "run_id is not null and benchmark not in ({})".format(
    ",".join(f"'{b}'" for b in sorted(NOT_MODEL_BENCHMARKS)))


class UnknownReference(TapirError):
    """A name given to compare is no stored model, run or checkpoint."""


@dataclass
class ModelRow:
    model: str  # the key results are stored under
    label: str
    base: str | None = None
    run_id: str | None = None  # training run of a checkpoint
    round: int | None = None
    is_base: bool = False
    bench_run: str | None = None  # only this benchmark run (the reference was its id)


@dataclass
class Entry:
    """One row of a section: one benchmark run of one model."""

    benchmark: str
    model: str
    label: str
    base: str | None
    is_base: bool
    train_run: str | None
    round: int | None
    run_id: str | None  # None: a base placeholder with no run in this benchmark
    status: str = MISSING
    options: dict[str, Any] | None = None
    subset: Any = MISSING
    judge: Any = MISSING
    judge_mode: Any = MISSING
    data_version: Any = MISSING
    template: Any = MISSING  # the prompt template the answers were generated with (name@digest)
    template_warning: Any = MISSING
    n: int | None = None
    failures: Any = MISSING
    failure_reasons: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    stderr: dict[str, float | None] = field(default_factory=dict)
    delta: dict[str, float | None] = field(default_factory=dict)
    delta_vs: str | None = None  # the base run the delta is against
    delta_note: str | None = None  # why there is no delta
    first_id: int = 0

    @property
    def is_student(self) -> bool:
        return bool(self.base) and not self.is_base


@dataclass
class Section:
    benchmark: str
    columns: list[str]  # "task/metric"
    entries: list[Entry]

    @property
    def has_delta(self) -> bool:
        return any(e.is_student for e in self.entries)


@dataclass
class Comparison:
    sections: list[Section]
    missing: list[str] = field(default_factory=list)  # models asked for that have no results
    classifiers: list[dict[str, Any]] = field(default_factory=list)  # not models, listed apart

    @property
    def columns(self) -> list[str]:
        return [f"{s.benchmark}/{c}" for s in self.sections for c in s.columns]

    @property
    def entries(self) -> list[Entry]:
        return [e for s in self.sections for e in s.entries]

    def section(self, benchmark: str) -> Section:
        return next(s for s in self.sections if s.benchmark == benchmark)


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


def stored_models(store: Store) -> list[str]:
    """Models with benchmark results (classifier rows are not models), first stored first."""
    return [r[0] for r in store.execute(
        f"select model from benchmark_results where {_MODEL_ROWS} group by model order by min(id)")]


def _expand(store: Store, ref: str, checkpoints: list[dict[str, Any]], models: set[str]) -> list[ModelRow] | None:
    """The models one command-line reference stands for (None: unknown)."""
    by_path = {model_key(c["path"]): c for c in checkpoints if c.get("path")}

    def from_checkpoint(c: dict[str, Any]) -> ModelRow:
        key = model_key(c["path"])
        base = model_key(c["base_model"]) if c.get("base_model") else None
        return ModelRow(key, label_for(key), base, c["run_id"], c["round"])

    runs = [r["id"] for r in store["runs"].rows_where("id = ? or id like ?", [ref, f"{ref}%"], select="id")]
    if len(ref) >= 6 and len(runs) == 1 or ref in runs:
        run_id = ref if ref in runs else runs[0]
        # a pipeline run's checkpoints are stored under its train stages' keys
        keys = {run_id}
        if "key" in store["stages"].columns_dict:  # an old schema read as it is has no stage keys
            keys |= {r[0] for r in store.execute(
                "select key from stages where run_id = ? and name = 'train' and key is not null", [run_id])}
        mine = [c for c in checkpoints if c["run_id"] in keys]
        if mine:
            return [from_checkpoint(c) for c in mine]
        run = store["runs"].get(run_id)
        config = json.loads(run["config"] or "{}")
        if "benchmark" in config and "model" in config:
            key = model_key(config["model"])
            row = from_checkpoint(by_path[key]) if key in by_path else ModelRow(key, label_for(key))
            row.bench_run = run_id
            return [row]
        raise TapirError(f"run {run_id} has no checkpoints and is not a benchmark run")
    key = model_key(ref)
    if key in by_path:
        return [from_checkpoint(by_path[key])]
    if key in models:
        return [ModelRow(key, label_for(key))]
    return None


def _unknown(store: Store, refs: list[str], models: list[str]) -> UnknownReference:
    lines = []
    classifier = {r[0] for r in store.execute(
        f"select distinct model from benchmark_results where not ({_MODEL_ROWS})")}
    for ref in refs:
        if model_key(ref) in classifier:
            lines.append(f"'{ref}' has classifier results only (tapir classifier eval), which are not model scores")
        else:
            lines.append(f"unknown model, run or checkpoint '{ref}'")
    shown = [label_for(m) for m in models[:20]] + (["..."] if len(models) > 20 else [])
    lines.append("Stored models: " + (", ".join(shown) if shown else "none (run `tapir bench` first)")
                 + "; or give a run id (`tapir runs`) or a checkpoint path.")
    return UnknownReference("\n".join(lines))


def select_models(store: Store, refs: list[str], bases: list[str] | None = None) -> list[ModelRow]:
    """Ordered rows: per backbone the base, then its students; then models without a base."""
    checkpoints = _checkpoints(store)
    stored = stored_models(store)
    known = set(stored)
    found: list[ModelRow] = []
    unknown = []
    for ref in refs or stored:
        rows = _expand(store, ref, checkpoints, known)
        if rows is None:
            unknown.append(ref)
        else:
            found.extend(rows)
    if unknown:
        raise _unknown(store, unknown, stored)
    default, specific = _parse_bases(bases or [])
    explicit_bases = set(specific.values()) | ({default} if default else set())
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


def _one(rows_meta: list[dict[str, Any]], key: str) -> Any:
    """The runs' value of a meta key: MISSING when no row has the key, the
    value when the rows agree, the distinct values joined when not."""
    values = [m[key] for m in rows_meta if key in m]
    if not values:
        return MISSING
    distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str) for v in values))
    if len(distinct) == 1:
        return values[0]
    return " | ".join(str(json.loads(v)) for v in distinct)


def _run_info(store: Store, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    out = {}
    for rid, status, config in store.execute(f"select id, status, config from runs where id in ({marks})", run_ids):
        try:
            cfg = json.loads(config or "{}")
        except ValueError:
            cfg = {}
        out[rid] = {"status": status, "options": cfg.get("options") if "benchmark" in cfg else None}
    return out


def _fill(entry: Entry, rows: list[dict[str, Any]], run: dict[str, Any] | None) -> None:
    metas = [r["meta"] for r in rows]
    entry.first_id = rows[0]["id"]
    # Rows written by a pipeline stage (run_id = the stage's key) have no row
    # in `runs`; they carry their status and settings in their meta.
    entry.status = (run or {}).get("status") or _one(metas, "status")
    if any(m.get("run_failed") for m in metas):
        entry.status = "failed"
    entry.options = (run or {}).get("options")
    if entry.options is None:
        stage_options = _one(metas, "options")
        entry.options = stage_options if isinstance(stage_options, dict) else None
    for key in ("judge", "judge_mode", "data_version", "template", "template_warning"):
        setattr(entry, key, _one(metas, key))
    subset = _one(metas, "subset")
    if subset == MISSING and entry.options is not None:
        subset = subset_label(entry.options)
    entry.subset = subset
    summary = failure_summary(rows)
    if summary.failures is None:
        entry.failures = MISSING
        entry.n = max((r["n"] for r in rows if r.get("n") is not None), default=None)
    else:
        entry.failures = summary.failures
        entry.failure_reasons = summary.reasons
        entry.n = summary.scored if summary.scored is not None else max(
            (r["n"] for r in rows if r.get("n") is not None), default=None)


def _comparable(entry: Entry) -> tuple | None:
    if entry.options is None:
        return None
    options = {k: v for k, v in entry.options.items() if k not in NEUTRAL_OPTIONS}
    return (json.dumps(options, sort_keys=True, default=str),
            *(json.dumps(getattr(entry, k), sort_keys=True, default=str)
              for k in ("subset", "judge", "judge_mode", "data_version")))


def _benchmark_order(names: list[str]) -> list[str]:
    def rank(bench: str):
        return (BENCHMARK_ORDER.index(bench) if bench in BENCHMARK_ORDER else len(BENCHMARK_ORDER), bench)

    return sorted(names, key=rank)


def _classifier_rows(store: Store) -> list[dict[str, Any]]:
    rows = store.execute(
        f"select benchmark, model, task, metric, value, n from benchmark_results where not ({_MODEL_ROWS}) "
        "order by id").fetchall()
    return [{"benchmark": b, "model": m, "task": t, "metric": k, "value": v, "n": n} for b, m, t, k, v, n in rows]


def build(store: Store, refs: list[str] | None = None, bases: list[str] | None = None, *,
          all_metrics: bool = False, benchmarks: list[str] | None = None) -> Comparison:
    """The comparison for ``refs`` (all stored models when empty)."""
    models = select_models(store, list(refs or []), bases)
    keys = list(dict.fromkeys(r.model for r in models))
    marks = ",".join("?" * len(keys))
    raw = store.execute(
        f"select id, benchmark, model, task, metric, value, stderr, n, run_id, meta from benchmark_results "
        f"where model in ({marks}) and {_MODEL_ROWS} order by id",
        keys,
    ).fetchall()
    present = sorted({r[1] for r in raw})
    if benchmarks:
        unknown = [b for b in benchmarks if b not in present]
        if unknown:
            raise UnknownReference(f"no results for benchmark(s) {', '.join(unknown)} among these models. "
                                   f"Benchmarks with results: {', '.join(present) or 'none'}")
    wanted = {m.model: m for m in models if not m.is_base}
    for m in models:
        wanted.setdefault(m.model, m)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rid, bench, model, task, metric, value, stderr, n, run_id, meta in raw:
        if benchmarks and bench not in benchmarks:
            continue
        limit_to = wanted[model].bench_run
        if limit_to and run_id != limit_to:
            continue
        groups.setdefault((bench, model, run_id), []).append(
            {"id": rid, "task": task, "metric": metric, "value": value, "stderr": stderr, "n": n,
             "meta": json.loads(meta) if meta else {}})
    runs = _run_info(store, sorted({k[2] for k in groups}))

    sections = []
    seen_models: set[str] = set()
    for bench in _benchmark_order(sorted({k[0] for k in groups})):
        mine = {k: v for k, v in groups.items() if k[0] == bench}
        col_first: dict[str, int] = {}
        for rows in mine.values():
            for r in rows:
                primary = r["meta"].get("primary", True)
                if not all_metrics and (primary is False or r["metric"] in DIAGNOSTIC_METRICS):
                    continue
                col_first.setdefault(f"{r['task']}/{r['metric']}", r["id"])
        columns = sorted(col_first, key=col_first.get)
        by_model: dict[str, list[Entry]] = {}
        for (_, model, run_id), rows in mine.items():
            m = wanted[model]
            entry = Entry(bench, model, m.label, m.base, False, m.run_id, m.round, run_id)
            _fill(entry, rows, runs.get(run_id))
            for r in rows:
                name = f"{r['task']}/{r['metric']}"
                if name in col_first:
                    entry.scores[name], entry.stderr[name] = r["value"], r["stderr"]
            by_model.setdefault(model, []).append(entry)
        entries: list[Entry] = []
        for m in models:
            if m.is_base:
                base_entries = by_model.get(m.model, [])
                has_students = any(s.base == m.model for s in models if not s.is_base and s.model in by_model)
                if not base_entries and not has_students:
                    continue
                for e in base_entries or [Entry(bench, m.model, m.label, None, True, None, None, None,
                                                status="no results")]:
                    e.base, e.is_base = None, True
                    entries.append(e)
                continue
            entries.extend(sorted(by_model.get(m.model, []), key=lambda e: e.first_id))
        # a model shown as a base and also asked for itself appears once, as the base
        unique: dict[tuple[str, str | None], Entry] = {}
        for e in entries:
            unique.setdefault((e.model, e.run_id), e)
        entries = list(unique.values())
        for e in entries:
            for c in columns:
                e.scores.setdefault(c, None)
                e.stderr.setdefault(c, None)
        _deltas(entries, columns)
        seen_models.update(e.model for e in entries if e.run_id)
        sections.append(Section(bench, columns, entries))
    missing = [m.label for m in models if not m.is_base and m.model not in seen_models]
    classifiers = _classifier_rows(store) if not refs and not benchmarks else []
    return Comparison(sections, missing, classifiers)


def _deltas(entries: list[Entry], columns: list[str]) -> None:
    bases = [e for e in entries if e.is_base and e.run_id]
    for e in entries:
        if not e.is_student:
            continue
        candidates = [b for b in bases if b.model == e.base]
        if not candidates:
            e.delta_note = "base has no run of this benchmark"
            continue
        key = _comparable(e)
        match = [b for b in candidates if key is not None and _comparable(b) == key]
        if len(match) != 1:
            e.delta_note = ("settings unknown (old run)" if key is None
                            else "no base run with the same settings")
            continue
        base = match[0]
        e.delta_vs = base.run_id
        for c in columns:
            a, b = e.scores.get(c), base.scores.get(c)
            e.delta[c] = None if a is None or b is None else a - b


# --------------------------------------------------------------------------- output


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _text(value: Any, width: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return text[: width - 1] + "…" if width and len(text) > width else text


def settings_text(options: dict[str, Any] | None) -> str:
    if options is None:
        return MISSING
    if not options:
        return "defaults"
    parts = []
    for k, v in options.items():
        shown = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        parts.append(f"{k}={shown}")
    return " ".join(parts)


def _subset_text(value: Any) -> str:
    if value == MISSING:
        return MISSING
    return "full" if value is None else str(value)


def _failures_text(e: Entry) -> str:
    if e.run_id is None:
        return ""
    return MISSING if e.failures == MISSING else str(e.failures)


_HEAD = ["model", "base", "round", "run", "status", "settings", "subset", "judge", "mode", "data", "n",
         "failures"]


def _ident(e: Entry, short: bool = True) -> list[str]:
    base = "(base)" if e.is_base else (label_for(e.base) if e.base else "")
    if e.run_id is None:
        return [e.label, base, "", "", e.status] + [""] * (len(_HEAD) - 5)
    return [e.label, base, "" if e.round is None else str(e.round), e.run_id, e.status,
            settings_text(e.options), _subset_text(e.subset), _text(e.judge), _text(e.judge_mode),
            _text(e.data_version, 14 if short else None), "" if e.n is None else str(e.n), _failures_text(e)]


_DELTA_HEAD = ["model", "base", "round", "run", "vs base run", "subset"]


def _delta_ident(e: Entry) -> list[str]:
    return [e.label, label_for(e.base) if e.base else "", "" if e.round is None else str(e.round),
            e.run_id or "", e.delta_vs or f"none: {e.delta_note}", _subset_text(e.subset)]


def _section_tables(section: Section, delta: bool) -> list[tuple[str, list[str], list[list[str]], int]]:
    """(title, header, body, number of identity columns) for a section."""
    out = [(section.benchmark, _HEAD + section.columns,
            [_ident(e) + [_cell(e.scores.get(c)) for c in section.columns] for e in section.entries], len(_HEAD))]
    if delta and section.has_delta:
        students = [e for e in section.entries if e.is_student]
        out.append((f"{section.benchmark}: delta vs base", _DELTA_HEAD + section.columns,
                    [_delta_ident(e) + [_cell(e.delta.get(c), signed=True) for c in section.columns]
                     for e in students], len(_DELTA_HEAD)))
    return out


def _footer(table: Comparison) -> list[str]:
    out = []
    if table.missing:
        out.append("No benchmark results for: " + ", ".join(table.missing))
    templates = [f"{e.benchmark} {e.label} run {e.run_id}: {e.template}"
                 + (" (not the format it was trained in)" if e.template_warning not in (None, MISSING) else "")
                 for e in table.entries if e.template not in (None, MISSING)]
    if templates:
        out.append("Prompt templates: " + "; ".join(templates))
    if table.classifiers:
        out.append("Classifier accuracy (tapir classifier eval; not models): " + ", ".join(
            f"{c['model']} {c['metric']} {c['value']:.3f} (n={c['n']})" for c in table.classifiers))
    return out


def _md_table(header: list[str], body: list[list[str]], ident: int) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * ident + ["---:"] * (len(header) - ident)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines)


def to_markdown(table: Comparison, delta: bool = True) -> str:
    out: list[str] = []
    for section in table.sections:
        for title, header, body, ident in _section_tables(section, delta):
            out += [f"## {title}", "", _md_table(header, body, ident), ""]
    footer = _footer(table)
    if footer:
        out += footer + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def _aligned(header: list[str], body: list[list[str]], ident: int) -> str:
    widths = [max([len(header[i])] + [len(b[i]) for b in body]) for i in range(len(header))]
    lines = []
    for cells in [header, *body]:
        lines.append("  ".join(c.ljust(w) if i < ident else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(lines)


def to_table(table: Comparison, delta: bool = True) -> str:
    out: list[str] = []
    for section in table.sections:
        for title, header, body, ident in _section_tables(section, delta):
            out += [f"{title}:", _aligned(header, body, ident), ""]
    out += _footer(table)
    return "\n".join(out).rstrip("\n") + "\n"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


_CSV_HEAD = ["benchmark", "model", "base", "round", "run", "status", "settings", "subset", "judge", "judge_mode",
             "data_version", "n", "failures"]


def to_csv(table: Comparison, delta: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = table.columns
    with_delta = delta and any(s.has_delta for s in table.sections)
    writer.writerow(_CSV_HEAD + columns + ([f"delta {c}" for c in columns] + ["delta vs run"] if with_delta else []))
    for e in table.entries:
        cells = [e.benchmark] + _ident(e, short=False)
        scores = {f"{e.benchmark}/{c}": v for c, v in e.scores.items()}
        row = cells + [_raw(scores.get(c)) for c in columns]
        if with_delta:
            deltas = {f"{e.benchmark}/{c}": v for c, v in e.delta.items()}
            row += [_raw(deltas.get(c)) for c in columns] + [e.delta_vs or ""]
        writer.writerow(row)
    return buf.getvalue()


def to_json(table: Comparison, delta: bool = True) -> str:
    rows = []
    for e in table.entries:
        item = {
            "benchmark": e.benchmark, "model": e.model, "label": e.label, "base": e.base, "is_base": e.is_base,
            "train_run": e.train_run, "round": e.round, "run_id": e.run_id, "status": e.status,
            "options": e.options if e.options is not None else MISSING, "subset": e.subset, "judge": e.judge,
            "judge_mode": e.judge_mode, "data_version": e.data_version, "template": e.template,
            "n": e.n, "failures": e.failures,
            "failure_reasons": e.failure_reasons, "scores": e.scores, "stderr": e.stderr,
        }
        if delta and e.is_student:
            item.update(delta=e.delta, delta_vs=e.delta_vs, delta_note=e.delta_note)
        rows.append(item)
    data = {"benchmarks": {s.benchmark: s.columns for s in table.sections}, "rows": rows,
            "missing": table.missing, "classifiers": table.classifiers}
    return json.dumps(data, indent=2, default=str) + "\n"


FORMATS = {"markdown": to_markdown, "table": to_table, "csv": to_csv, "json": to_json}


def render(table: Comparison, fmt: str = "markdown", delta: bool = True) -> str:
    if fmt not in FORMATS:
        raise TapirError(f"unknown format '{fmt}'. Formats: {', '.join(FORMATS)}")
    return FORMATS[fmt](table, delta)


def plot(table: Comparison, path: str | Path) -> Path:
    """One small bar chart per column, a bar per run (base models hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, c) for s in table.sections for c in s.columns]
    if not panels:
        raise TapirError("nothing to plot: no benchmark columns")
    n = len(panels)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (section, col) in zip(axes.flat, panels):
        entries = [e for e in section.entries if e.run_id]
        labels = [f"{e.label} [{e.run_id[:6]}]" for e in entries]
        heights = [e.scores[col] if e.scores.get(col) is not None else float("nan") for e in entries]
        bars = ax.bar(range(len(labels)), heights, color=[f"C{i % 10}" for i in range(len(labels))])
        for bar, e in zip(bars, entries):
            if e.is_base:
                bar.set_hatch("//")
        ax.set_title(f"{section.benchmark}/{col}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Python API


class _CallableModule(type(os)):
    """``tapir.compare(...)`` calls :func:`tapir.api.compare`; the module's
    functions (``tapir.compare.build``, ``render``...) stay where they are."""

    def __call__(self, refs=None, **kwargs) -> Comparison:
        from tapir.api import compare

        return compare(refs, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
