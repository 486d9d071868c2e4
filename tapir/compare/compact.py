"""The compact comparison, ``tapir compare``'s default: one row per model,
one column per benchmark, each cell the benchmark's headline score as
``mean ± stderr`` (the stderr the evaluator stored: lm-eval's
``acc_stderr``, AlpacaEval's standard error, MT-Bench's per-question score
spread / sqrt(n); a cell without one shows the mean alone).

A benchmark's column is its first headline column (MT-Bench
``overall/score``, AlpacaEval ``win_rate``, ...); lm-eval has one column
per task. When a model has several runs of a benchmark (a subset, another
judge) the cell shows one, chosen as: not failed, then full (no subset),
then the latest; a note under the table names it and says that
``--full`` lists every run. A cell from a subset or failed run is marked
``*`` and the note says why. Formats: markdown, table, latex, csv, json.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from tapir.compare.full import footer, settings_text
from tapir.compare.rows import MISSING, SEP, Comparison, Entry
from tapir.errors import TapirError

# Benchmarks whose every headline column is a column of its own (lm-eval: one per task).
EVERY_HEADLINE = frozenset({"lmeval"})


@dataclass
class Column:
    name: str  # the header
    benchmark: str
    column: str  # task/metric in the full table


@dataclass
class Cell:
    value: float | None
    stderr: float | None
    n: int | None
    run_id: str
    subset: Any
    status: str
    mark: str = ""  # "*": a subset or failed run


@dataclass
class CompactRow:
    label: str
    model: str
    backbone: str | None
    setting: str | None
    round: int | None
    is_base: bool
    cells: dict[str, Cell | None] = field(default_factory=dict)  # column name -> cell (None: no run)


@dataclass
class CompactTable:
    columns: list[Column]
    rows: list[CompactRow]
    notes: list[str] = field(default_factory=list)

    def row(self, label: str) -> CompactRow:
        return next(r for r in self.rows if r.label == label)


def _columns(table: Comparison) -> list[Column]:
    out = []
    for section in table.sections:
        chosen = section.columns if section.benchmark in EVERY_HEADLINE else section.columns[:1]
        if len(chosen) == 1 and section.benchmark not in EVERY_HEADLINE:
            out.append(Column(section.benchmark, section.benchmark, chosen[0]))
            continue
        tasks = [c.rsplit("/", 1)[0] for c in chosen]
        unique = len(set(tasks)) == len(tasks)
        out += [Column(t if unique else c, section.benchmark, c) for t, c in zip(tasks, chosen)]
    return out


def _pick(entries: list[Entry]) -> Entry:
    """The run a cell shows: not failed, then full (no subset), then the latest."""
    return max(entries, key=lambda e: (e.status != "failed", e.subset is None, e.first_id))


def _subset_text(subset: Any) -> str:
    return "full" if subset is None else ("subset unknown" if subset == MISSING else str(subset))


def compact(table: Comparison) -> CompactTable:
    columns = _columns(table)
    runs: dict[tuple[str, str], list[Entry]] = {}
    present: set[str] = set()
    for e in table.entries:
        present.add(e.model)
        if e.run_id:
            runs.setdefault((e.model, e.benchmark), []).append(e)
    rows, notes, shown = [], [], []
    for m in table.models:
        if m.model not in present:
            continue
        row = CompactRow(m.label, m.model, m.backbone, m.setting, m.round, m.is_base)
        for section in table.sections:
            mine = runs.get((m.model, section.benchmark), [])
            chosen = _pick(mine) if mine else None
            odd: list[str] = []
            if chosen is not None:
                shown.append(chosen)
                if len(mine) > 1:
                    notes.append(f"{m.label}: {len(mine)} runs of {section.benchmark}; shown: run {chosen.run_id} "
                                 f"({_subset_text(chosen.subset)}, {settings_text(chosen.options)}); "
                                 "--full lists every run")
                odd = [w for w in (chosen.subset is not None and _subset_text(chosen.subset),
                                   chosen.status == "failed" and "failed run") if w]
                if odd:
                    notes.append(f"* {m.label} {section.benchmark}: {', '.join(odd)} (run {chosen.run_id})")
            for col in columns:
                if col.benchmark != section.benchmark:
                    continue
                row.cells[col.name] = None if chosen is None else Cell(
                    chosen.scores.get(col.column), chosen.stderr.get(col.column), chosen.n, chosen.run_id,
                    chosen.subset, chosen.status, "*" if odd else "")
        rows.append(row)
    legend = "; ".join(f"{c.name} = {c.column}" if c.name == c.benchmark else f"{c.name} = {c.benchmark} {c.column}"
                       for c in columns)
    notes.insert(0, f"Columns (mean ± stderr): {legend}" if legend else "No benchmark columns")
    notes += footer(table, shown)
    return CompactTable(columns, rows, notes)


# --------------------------------------------------------------------------- cells


def _digits(table: CompactTable, column: Column) -> int:
    values = [abs(c.value) for r in table.rows if (c := r.cells.get(column.name)) and c.value is not None]
    return 3 if not values or max(values) < 10 else 2


def cell_text(cell: Cell | None, digits: int = 3, pm: str = "±") -> str:
    """``0.525 ± 0.080``; the mean alone without a stderr; ``-`` for no run or no value."""
    if cell is None or cell.value is None:
        return "-"
    text = f"{cell.value:.{digits}f}"
    if cell.stderr is not None:
        text += f" {pm} {cell.stderr:.{digits}f}"
    return text + cell.mark


def _body(table: CompactTable, pm: str = "±") -> list[list[str]]:
    digits = {c.name: _digits(table, c) for c in table.columns}
    return [[r.label] + [cell_text(r.cells.get(c.name), digits[c.name], pm) for c in table.columns]
            for r in table.rows]


def to_markdown(table: CompactTable) -> str:
    header = ["model"] + [c.name for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(table.columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in _body(table)]
    return "\n".join(lines + [""] + table.notes) + "\n"


def to_table(table: CompactTable) -> str:
    header = ["model"] + [c.name for c in table.columns]
    body = _body(table)
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in [header, *body]]
    return "\n".join(lines + [""] + table.notes) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace(SEP.strip(), r"$\cdot$").replace("±", r"$\pm$")


def to_latex(table: CompactTable) -> str:
    """A booktabs ``tabular`` to paste into a paper; the notes as ``%`` comments."""
    lines = [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
             " & ".join(["Model"] + [latex_escape(c.name) for c in table.columns]) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell) for cell in cells) + r" \\" for cells in _body(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += ["% " + note for note in table.notes]
    return "\n".join(lines) + "\n"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def to_csv(table: CompactTable) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "backbone", "setting", "round"]
                    + [h for c in table.columns for h in (c.name, f"{c.name} stderr")])
    for r in table.rows:
        cells = [r.cells.get(c.name) for c in table.columns]
        writer.writerow([r.label, r.backbone or "", "base" if r.is_base else (r.setting or ""),
                         "" if r.round is None else r.round]
                        + [v for c in cells for v in ((_raw(c.value), _raw(c.stderr)) if c else ("", ""))])
    return buf.getvalue()


def to_json(table: CompactTable) -> str:
    data = {
        "columns": [{"name": c.name, "benchmark": c.benchmark, "column": c.column} for c in table.columns],
        "rows": [{"label": r.label, "model": r.model, "backbone": r.backbone, "setting": r.setting,
                  "round": r.round, "is_base": r.is_base,
                  "cells": {name: None if c is None else {"value": c.value, "stderr": c.stderr, "n": c.n,
                                                          "run_id": c.run_id, "subset": c.subset,
                                                          "status": c.status}
                            for name, c in r.cells.items()}}
                 for r in table.rows],
        "notes": table.notes,
    }
    return json.dumps(data, indent=2, default=str) + "\n"


FORMATS = {"markdown": to_markdown, "table": to_table, "latex": to_latex, "csv": to_csv, "json": to_json}


def render_compact(table: CompactTable, fmt: str = "markdown") -> str:
    if fmt not in FORMATS:
        raise TapirError(f"unknown format '{fmt}'. Formats: {', '.join(FORMATS)}")
    return FORMATS[fmt](table)
