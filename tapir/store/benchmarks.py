"""The ``benchmark_results`` table: one row per (benchmark, model, task,
metric) of a run, its ``meta`` a JSON object.

``meta`` has one encoding: written by :func:`encode_meta`, read back only
through :func:`decode_meta` (NULL or empty: ``{}``). ``tapir.bench`` and
the classifier CLI write rows through :func:`replace_run_rows` and
:func:`replace_row`; the report and ``tapir compare`` read them here."""

from __future__ import annotations

import json
from typing import Any, Collection, Sequence

from tapir.store.db import Store, dumps

_COLUMNS = ("benchmark", "model", "task", "metric", "value", "stderr", "n", "run_id", "meta", "created_at")
_INSERT = f"insert into benchmark_results ({', '.join(_COLUMNS)}) values ({', '.join('?' * len(_COLUMNS))})"
# Tables whose rows an evaluator run keeps under its run id (``scope``).
EVALUATOR_TABLES = ("judgments", "responses", "scores")


def encode_meta(meta: dict[str, Any] | None) -> str:
    """``benchmark_results.meta`` for ``meta``."""
    return dumps(meta or {})


def decode_meta(text: str | None) -> dict[str, Any]:
    """A row's meta from ``benchmark_results.meta``."""
    return json.loads(text) if text else {}


def _model_rows(not_models: Collection[str]) -> tuple[str, list[str]]:
    """The SQL condition for rows that are a model's scores: stored by a run,
    of a benchmark not in ``not_models`` (e.g. classifier evaluations)."""
    names = sorted(not_models)
    return f"run_id is not null and benchmark not in ({','.join('?' * len(names))})", names


def models_with_results(store: Store, models: Sequence[str]) -> list[str]:
    """Which of ``models`` have benchmark rows from a benchmark run
    (classifier evaluations left out)."""
    if not models:
        return []
    marks = ",".join("?" * len(models))
    return [r[0] for r in store.execute(
        f"select distinct model from benchmark_results where model in ({marks}) and run_id is not null "
        f"and benchmark != 'classifier'", list(models))]


def model_results(store: Store, model: str) -> list[tuple]:
    """(id, benchmark, task, metric, value, stderr, n, meta) of the
    benchmark rows of ``model`` (classifier evaluations left out), oldest first."""
    return store.execute(
        "select id, benchmark, task, metric, value, stderr, n, meta from benchmark_results "
        "where model = ? and benchmark != 'classifier' order by id", [model]).fetchall()


def scored_models(store: Store, not_models: Collection[str]) -> list[str]:
    """Models with score rows (see :func:`_model_rows`), first stored first."""
    where, params = _model_rows(not_models)
    return [r[0] for r in store.execute(
        f"select model from benchmark_results where {where} group by model order by min(id)", params)]


def unscored_models(store: Store, not_models: Collection[str]) -> set[str]:
    """Models that have rows, none of them score rows' kind (classifier
    evaluations, rows without a run)."""
    where, params = _model_rows(not_models)
    return {r[0] for r in store.execute(f"select distinct model from benchmark_results where not ({where})", params)}


def unscored_rows(store: Store, not_models: Collection[str]) -> list[dict[str, Any]]:
    """(benchmark, model, task, metric, value, n) of the rows that are not
    model scores, oldest first."""
    where, params = _model_rows(not_models)
    rows = store.execute(
        f"select benchmark, model, task, metric, value, n from benchmark_results where not ({where}) order by id",
        params).fetchall()
    return [{"benchmark": b, "model": m, "task": t, "metric": k, "value": v, "n": n} for b, m, t, k, v, n in rows]


def score_rows(store: Store, models: Sequence[str], not_models: Collection[str]) -> list[tuple]:
    """(id, benchmark, model, task, metric, value, stderr, n, run_id, meta)
    of the score rows of ``models``, oldest first, ``meta`` decoded."""
    where, params = _model_rows(not_models)
    marks = ",".join("?" * len(models))
    rows = store.execute(
        f"select id, benchmark, model, task, metric, value, stderr, n, run_id, meta from benchmark_results "
        f"where model in ({marks}) and {where} order by id", [*models, *params]).fetchall()
    return [(*r[:9], decode_meta(r[9])) for r in rows]


def replace_run_rows(store: Store, run_id: str, benchmark: str, model: str, rows: Sequence[tuple]) -> None:
    """Replace the rows of (run ``run_id``, ``benchmark``, ``model``) with
    ``rows`` ((benchmark, model, task, metric, value, stderr, n, run_id,
    meta text, created_at) each), in one commit."""
    with store.transaction() as conn:
        conn.execute("delete from benchmark_results where run_id = ? and benchmark = ? and model = ?",
                     [run_id, benchmark, model])
        conn.executemany(_INSERT, rows)


def replace_row(store: Store, benchmark: str, model: str, task: str, metric: str, value: float | None,
                stderr: float | None, n: int | None, meta: dict[str, Any], created_at: str) -> None:
    """Replace the one (benchmark, model, task, metric) row kept without a
    run (a classifier evaluation), in one commit."""
    with store.transaction() as conn:
        conn.execute("delete from benchmark_results where benchmark = ? and model = ? and task = ? and metric = ?",
                     [benchmark, model, task, metric])
        conn.execute(_INSERT, [benchmark, model, task, metric, value, stderr, n, None, encode_meta(meta), created_at])


def forget_run_rows(store: Store, run_id: str) -> dict[str, int]:
    """Delete what an evaluator stored under ``run_id`` (its rows of
    :data:`EVALUATOR_TABLES` and its result rows), in one commit: the number
    deleted per table (tables this database lacks left out)."""
    deleted = {}
    tables = set(store.db.table_names())
    with store.transaction() as conn:
        for table, column in (*((t, "scope") for t in EVALUATOR_TABLES), ("benchmark_results", "run_id")):
            if table in tables:
                deleted[table] = conn.execute(f"delete from {table} where {column} = ?", [run_id]).rowcount
    return deleted


def result_rows(store: Store, *, run_id: str | None = None, benchmark: str | None = None,
                model: str | None = None) -> list[dict[str, Any]]:
    """Every column of the ``benchmark_results`` rows of ``run_id``,
    ``benchmark`` and ``model`` (each one left out when None), oldest first,
    ``meta`` decoded."""
    where, params = [], []
    for column, value in (("run_id", run_id), ("benchmark", benchmark), ("model", model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"select * from benchmark_results{' where ' + ' and '.join(where) if where else ''} order by id"
    return [{**row, "meta": decode_meta(row["meta"])} for row in store.db.query(sql, params)]


def run_has_results(store: Store, run_id: str) -> bool:
    """Has run ``run_id`` at least one result row?"""
    return store.execute("select 1 from benchmark_results where run_id = ? limit 1", [run_id]).fetchone() is not None


def has_results_table(store: Store) -> bool:
    """Has the database a ``benchmark_results`` table (an old one read as it is may not)?"""
    return store["benchmark_results"].exists()
