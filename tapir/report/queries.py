"""What the report reads from the store, each through a :mod:`tapir.store` function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapir.store.classifications import labels_by_item
from tapir.store.db import Store
from tapir.store.runs import run_row
from tapir.store.scores import scores_by_item
from tapir.store.stages import run_stages


def open_readonly(path: str | Path | None = None) -> Store:
    """The database at ``path`` (see :func:`tapir.store.db.resolve_db_path`),
    opened read-only: a missing file is an error, never a new database, and
    no migration runs."""
    from tapir.store import open_store

    return open_store(path, readonly=True)


def find_run(store: Store, ref: str) -> dict[str, Any]:
    """A run by id, unique id prefix or name (the latest run of that name),
    as :func:`tapir.runs.resolve_run` reads them."""
    from tapir.runs import resolve_run

    return run_row(store, resolve_run(store, ref))


def _stages(store: Store, run_id: str) -> list[dict[str, Any]]:
    return run_stages(store, run_id)


def _by_node(stages: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(s["name"], s["round"]): s for s in stages}


def _scores(store: Store, key: str | None, name: str) -> dict[str, float]:
    if not key:
        return {}
    return {i: v for i, v in scores_by_item(store, key, name).items() if v is not None}


def _labels(store: Store, key: str | None) -> dict[str, str]:
    if not key:
        return {}
    return {i: label for i, label in labels_by_item(store, key).items() if label is not None}
