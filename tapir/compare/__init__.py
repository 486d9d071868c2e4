"""``tapir compare``: benchmark scores of several models side by side, truthfully.

By default a **compact** table (:mod:`tapir.compare.compact`): one row per
model, labelled ``backbone · setting · S_r`` (:mod:`tapir.compare.select`),
one column per benchmark with ``mean ± stderr``; markdown, table, latex,
csv or json. ``--full`` (:mod:`tapir.compare.full`) shows one section per
benchmark and in it **one row per benchmark run** (a model and its
settings), never merged, with the run's status, settings, subset, judge and
mode, data version, ``n``, failures and each student's delta against the
base run with the same settings. A value an old stored run did not record
shows as ``?``.

Rows are models only: results written by ``tapir classifier eval``
(benchmark ``classifier``) are listed apart. Rows are ordered by backbone
(its base model first), setting and round, in every format and in
``tapir.compare().entries``.

Modules: :mod:`~tapir.compare.rows` (the dataclasses),
:mod:`~tapir.compare.select` (which models, labels, order),
:mod:`~tapir.compare.gather` (:func:`build`: the numbers),
:mod:`~tapir.compare.full` and :mod:`~tapir.compare.compact` (the
formats), :mod:`~tapir.compare.chart` (``--plot``).
"""

from __future__ import annotations

import os
import sys

from tapir.compare.compact import CompactTable, compact, render_compact
from tapir.compare.full import FORMATS, footer, render_full, settings_text, to_csv, to_json, to_markdown, to_table
from tapir.compare.gather import _one, build, compare
from tapir.compare.rows import (BENCHMARK_ORDER, DIAGNOSTIC_METRICS, MISSING, NEUTRAL_OPTIONS, NOT_MODEL_BENCHMARKS,
                                Comparison, Entry, ModelRow, Section, UnknownReference, label_for, short_name)
from tapir.compare.select import select_models, stored_models

COMPACT_FORMATS = ("markdown", "table", "latex", "csv", "json")


def render(table: Comparison, fmt: str = "markdown", delta: bool = True, *, full: bool = False) -> str:
    """The comparison as text: compact (default) or the full per-run table (``full=True``)."""
    if full:
        return render_full(table, fmt, delta)
    return render_compact(compact(table), fmt)


def plot(table: Comparison | CompactTable, path):
    """``--plot``: one bar chart per compact column (see :mod:`tapir.compare.chart`)."""
    from tapir.compare.chart import plot as draw

    return draw(table, path)


__all__ = ["BENCHMARK_ORDER", "COMPACT_FORMATS", "DIAGNOSTIC_METRICS", "FORMATS", "MISSING", "NEUTRAL_OPTIONS",
           "NOT_MODEL_BENCHMARKS", "CompactTable", "Comparison", "Entry", "ModelRow", "Section", "UnknownReference",
           "_one", "build", "compact", "compare", "footer", "label_for", "plot", "render", "render_compact", "render_full",
           "select_models", "settings_text", "short_name", "stored_models", "to_csv", "to_json", "to_markdown",
           "to_table"]


class _CallableModule(type(os)):
    """``tapir.compare(...)`` calls :func:`tapir.compare.gather.compare`; the package's
    functions (``tapir.compare.build``, ``render``...) stay where they are."""

    def __call__(self, refs=None, **kwargs) -> Comparison:
        return compare(refs, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
