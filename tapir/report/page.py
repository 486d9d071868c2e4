"""The report of one run: its sections, built and written."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tapir.report.ablation import _ablation_section
from tapir.report.benchmarks import benchmark_rounds
from tapir.report.html import render_html
from tapir.report.pieces import Report
from tapir.report.queries import _stages, find_run
from tapir.report.sections import _config_section, mfd_distribution, task_distribution
from tapir.report.stages import stage_section
from tapir.store.db import Store, utcnow


def build_report(store: Store, run_ref: str, *, ablation: Sequence[tuple[str, str]] | None = None) -> Report:
    """Everything the page shows, for run ``run_ref`` (id, prefix or name)."""
    run = find_run(store, run_ref)
    stages = _stages(store, run["id"])
    sections = [
        _config_section(run, stages),
        task_distribution(store, stages),
        mfd_distribution(store, stages),
        benchmark_rounds(store, stages),
        _ablation_section(store, run, ablation),
        stage_section(store, run["id"]),
    ]
    return Report(run, sections, utcnow())


def write_report(store: Store, run_id: str, path: str | Path | None = None, *,
                 ablation: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write the HTML report of ``run_id`` (id, prefix or name) to ``path``
    (default ``report-<run id>.html``) and return the path. ``ablation``:
    (setting, run id) pairs for the Table 5 section (default: found with
    :func:`ablation_runs`). Reads the store only."""
    report = build_report(store, run_id, ablation=ablation)
    out = Path(path) if path is not None else Path(f"report-{report.run['id']}.html")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(out)
    return out
