"""The ``benchmark_results`` table, as the report reads it (``tapir.bench``
writes it)."""

from __future__ import annotations

from typing import Sequence

from tapir.store.db import Store


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
