"""The full comparison (``tapir compare --full``): one section per
benchmark, one row per benchmark run with its status, settings, subset,
judge, mode, data version, n, failures and scores, and per section the
students' delta against the base run with the same settings. Formats:
markdown, table (aligned text), csv, json."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from tapir.compare.rows import MISSING, Comparison, Entry, Section, label_for
from tapir.errors import TapirError



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


def footer(table: Comparison, entries: list[Entry] | None = None) -> list[str]:
    """Lines under the tables: models without results, the prompt template
    of each run in ``entries`` (all by default), the classifier rows."""
    out = []
    if table.missing:
        out.append("No benchmark results for: " + ", ".join(table.missing))
    templates = [f"{e.benchmark} {e.label} run {e.run_id}: {e.template}"
                 + (" (not the format it was trained in)" if e.template_warning not in (None, MISSING) else "")
                 for e in (table.entries if entries is None else entries) if e.template not in (None, MISSING)]
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
    lines = footer(table)
    if lines:
        out += lines + [""]
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
    out += footer(table)
    return "\n".join(out).rstrip("\n") + "\n"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


_CSV_HEAD = ["benchmark", "label", "model", "base", "round", "run", "status", "settings", "subset", "judge",
             "judge_mode", "data_version", "n", "failures"]


def to_csv(table: Comparison, delta: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = table.columns
    with_delta = delta and any(s.has_delta for s in table.sections)
    writer.writerow(_CSV_HEAD + columns + ([f"delta {c}" for c in columns] + ["delta vs run"] if with_delta else []))
    for e in table.entries:
        ident = _ident(e, short=False)
        cells = [e.benchmark, ident[0], e.model] + ident[1:]
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
            "backbone": e.backbone, "setting": e.setting, "train_run": e.train_run, "round": e.round,
            "run_id": e.run_id, "status": e.status,
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


def render_full(table: Comparison, fmt: str = "markdown", delta: bool = True) -> str:
    if fmt not in FORMATS:
        raise TapirError(f"the full table has no format '{fmt}'. Formats: {', '.join(FORMATS)} "
                         "(latex is for the compact table: leave out --full)")
    return FORMATS[fmt](table, delta)
