"""The comparison's numbers: per benchmark, one entry per benchmark run of
each selected model (:func:`build`), with the run's status, settings,
subset, judge, data version, n, failures, scores and stderr, and each
student's delta against the base run with the same settings."""

from __future__ import annotations

import json
import os
from typing import Any

from tapir.bench import failure_summary, subset_label
from tapir.compare.rows import (BENCHMARK_ORDER, DIAGNOSTIC_METRICS, MISSING, NEUTRAL_OPTIONS,
                                NOT_MODEL_BENCHMARKS, Comparison, Entry, Section, UnknownReference)
from tapir.compare.select import select_models
from tapir.store.benchmarks import score_rows, unscored_rows
from tapir.store.db import Store
from tapir.store.runs import statuses_and_configs


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
    return {rid: {"status": status, "options": cfg.get("options") if "benchmark" in cfg else None}
            for rid, (status, cfg) in statuses_and_configs(store, run_ids).items()}


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
    readings = _one(metas, "readings")  # MT-Bench's name; AlpacaEval's rows call it "read"
    entry.readings = readings if readings != MISSING else _one(metas, "read")
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
    return unscored_rows(store, NOT_MODEL_BENCHMARKS)


def build(store: Store, refs: list[str] | None = None, bases: list[str] | None = None, *,
          all_metrics: bool = False, benchmarks: list[str] | None = None) -> Comparison:
    """The comparison for ``refs`` (all stored models when empty)."""
    models = select_models(store, list(refs or []), bases)
    keys = list(dict.fromkeys(r.model for r in models))
    raw = score_rows(store, keys, NOT_MODEL_BENCHMARKS)
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
             "meta": meta})
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
            entry = Entry(bench, model, m.label, m.base, False, m.run_id, m.round, run_id,
                          backbone=m.backbone, setting=m.setting)
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
                    e.base, e.is_base, e.label, e.backbone = None, True, m.label, m.backbone
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
    return Comparison(sections, missing, classifiers, models)


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


def compare(refs: list[str] | str | None = None, *, db: str | os.PathLike | None = None,
            bases: list[str] | None = None, benchmarks: list[str] | None = None,
            all_metrics: bool = False) -> Comparison:
    """Benchmark scores side by side, as ``tapir compare`` (also callable as
    ``tapir.compare(...)``). ``refs``: run ids (a training run brings all its
    checkpoints), checkpoint paths or stored model names; all stored models
    when empty. ``bases``: ``["BASE"]`` or ``["MODEL=BASE"]`` as ``--base``.

    Returns a :class:`tapir.compare.Comparison`: ``.sections`` (one per
    benchmark, with ``.columns`` and ``.entries``), ``.entries`` (one per
    benchmark run: ``model``, ``label``, ``round``, ``run_id``, ``n``,
    ``failures``, ``scores`` and ``delta`` by ``task/metric``...),
    ``.missing``. ``tapir.compare.render(table, "markdown")`` prints it.
    Reads only: a missing database is an error, never created."""
    from tapir.store import open_store

    if isinstance(refs, (str, os.PathLike)):
        refs = [str(refs)]
    store = open_store(None if db is None else str(db), readonly=True)
    try:
        return build(store, [str(r) for r in refs or []], list(bases or []), all_metrics=all_metrics,
                     benchmarks=list(benchmarks) if benchmarks else None)
    finally:
        store.close()
