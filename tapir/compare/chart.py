"""``tapir compare --plot``: one bar chart per compact column, a bar per
model (base models hatched), each bar annotated with its value and drawn
with its stderr. The y axis is fitted to the data (a 0.627 -> 0.579 change
must be visible, so it does not start at 0 unless the data reach it); the
x labels are wrapped, rotated and laid out inside the figure."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from tapir.compare.compact import CompactTable, compact
from tapir.compare.rows import SEP, Comparison
from tapir.errors import TapirError

LABEL_WIDTH = 22  # characters per line of an x label


def wrap_label(label: str, width: int = LABEL_WIDTH) -> str:
    """A row label on several lines: at its `` · `` parts first, then at spaces or anywhere."""
    lines = []
    for part in label.split(SEP):
        lines += textwrap.wrap(part, width, break_on_hyphens=False) or [part]
    return "\n".join(lines)


def _series(row) -> tuple:
    return (row.backbone, None if row.is_base else row.setting) if row.backbone else (row.label,)


def y_limits(values: list[float], errors: list[float | None]) -> tuple[float, float]:
    """Limits around the data and their error bars, with room for the annotations;
    0 is kept as the floor only when the data come within a span of it."""
    lows = [v - (e or 0.0) for v, e in zip(values, errors)]
    highs = [v + (e or 0.0) for v, e in zip(values, errors)]
    lo, hi = min(lows), max(highs)
    span = hi - lo or (abs(hi) * 0.1 or 1.0)
    bottom, top = lo - 0.25 * span, hi + 0.3 * span
    if lo >= 0 > bottom:
        bottom = 0.0
    return bottom, top


def figure(table: Comparison | CompactTable):
    """The chart as a matplotlib Figure (no pyplot: no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    view = compact(table) if isinstance(table, Comparison) else table
    if not view.columns:
        raise TapirError("nothing to plot: no benchmark columns")
    n = len(view.columns)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    width = max(2.0, 0.9 * len(view.rows) + 1.2)
    fig = Figure(figsize=(width * ncols, 4.2 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    # a colour per backbone and setting (a run's rounds share it); a base is hatched in its backbone's colour
    colors = {key: f"C{i % 10}" for i, key in enumerate(dict.fromkeys(_series(r) for r in view.rows))}
    for ax, col in zip(axes.flat, view.columns):
        rows = [r for r in view.rows if (c := r.cells.get(col.name)) is not None and c.value is not None]
        cells = [r.cells[col.name] for r in rows]
        values = [c.value for c in cells]
        errors = [c.stderr for c in cells]
        x = list(range(len(rows)))
        bars = ax.bar(x, values, color=[colors[_series(r)] for r in rows],
                      yerr=[e or 0.0 for e in errors] if any(e is not None for e in errors) else None,
                      capsize=3, ecolor="0.3")
        for bar, r in zip(bars, rows):
            if r.is_base:
                bar.set_hatch("//")
        digits = 3 if not values or max(abs(v) for v in values) < 10 else 2
        for bar, c in zip(bars, cells):
            top = bar.get_height() + (c.stderr or 0.0)
            ax.annotate(f"{c.value:.{digits}f}", (bar.get_x() + bar.get_width() / 2, top),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        if values:
            ax.set_ylim(*y_limits(values, errors))
        ax.set_title(f"{col.name} ({col.column})" if col.name == col.benchmark else f"{col.benchmark}: {col.name}",
                     fontsize=9)
        ax.set_xticks(x, [wrap_label(r.label) for r in rows], rotation=30, ha="right", rotation_mode="anchor",
                      fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot(table: Comparison | CompactTable, path: str | Path) -> Path:
    """Write the chart (PNG) to ``path``."""
    fig = figure(table)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path

