"""``tapir study-report NAME``: one self-contained HTML page for a study
(:mod:`tapir.study`): every run whose stored config says ``study: {name:
NAME, ...}``.

The page, top to bottom:

* backbones x benchmarks (the paper's Tables 2/3): per student its base
  model and its TAPIR student (the ``full`` setting's last checkpoint, or
  the study's last setting when ``full`` was not run);
* settings x benchmarks per backbone (Table 5), with the examples, optimizer
  steps and tokens each setting trained (:func:`tapir.report.ablation_table`);
* benchmark scores per round per backbone (Fig. 3,
  :func:`tapir.report.benchmark_rounds`);
* where every number comes from: benchmark, model, judge, judge mode,
  prompt template, n, failures, benchmark run;
* what failed: runs not done, failed stages, failed items by kind, benchmark
  runs with failures;
* per run, folded: the task distribution (Fig. 5) and the MFD per round
  (Fig. 6), images capped at a screen's height.

Read-only; built from :mod:`tapir.report`'s pieces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir.errors import TapirError
from tapir.report.ablation import ablation_table
from tapir.report.benchmarks import _benchmark_entries, benchmark_rounds, checkpoints_of
from tapir.report.html import CSS, _e, _figure_html, _table_html
from tapir.report.pieces import Section, Table
from tapir.report.queries import _stages
from tapir.report.sections import mfd_distribution, task_distribution
from tapir.store.db import Store, utcnow
from tapir.store.runs import study_names
from tapir.store.runs import study_runs as stored_study_runs

# A figure is at most this tall on the page (a screen), however many task
# types or rounds it has; a click opens it at full size.
MAX_FIGURE_HEIGHT = "85vh"


@dataclass
class StudyRunRow:
    id: str
    name: str
    status: str
    student: str
    setting: str
    created_at: str
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StudyPage:
    name: str
    db: str
    runs: list[StudyRunRow]
    sections: list[Section]
    per_run: list[tuple[StudyRunRow, list[Section]]]
    generated_at: str


def study_runs(store: Store, name: str) -> list[StudyRunRow]:
    """The runs of study ``name`` (from their stored config's ``study``), in
    the order they were started; a (student, setting) run again under a new
    config replaces the older one."""
    rows = stored_study_runs(store, name)
    if not rows:
        known = study_names(store)
        raise TapirError(f"no study '{name}' in {store.path}: no run's config has study.name = {name!r}. Studies "
                         f"here: {', '.join(known) or 'none'} (run one with `tapir study CONFIG`)")
    latest: dict[tuple[str, str], StudyRunRow] = {}
    for rid, run_name, status, config, created in rows:
        tag = (json.loads(config or "{}").get("study") or {})
        row = StudyRunRow(rid, run_name, status, str(tag.get("student") or "?"), str(tag.get("setting") or "?"),
                          created)
        latest.pop((row.student, row.setting), None)
        latest[(row.student, row.setting)] = row
    out = list(latest.values())
    for r in out:
        r.stages = _stages(store, r.id)
    return out


def _label(model: str) -> str:
    from tapir.study import student_labels

    return student_labels([model])[0]


def _final_checkpoint(run: StudyRunRow) -> str | None:
    """The setting's result: S0 for full-alpaca, else the last round."""
    ckpts = checkpoints_of(run.stages)
    if not ckpts:
        return None
    return ckpts.get(0) if run.setting == "full-alpaca" else ckpts[max(ckpts)]


def _latest_scores(entries) -> dict[str, dict[str, Any]]:
    """model -> "benchmark: column" -> the entry of its latest run with a value."""
    out: dict[str, dict[str, Any]] = {}
    for sec in entries.sections:
        for e in sec.entries:
            if e.run_id is None:
                continue
            for col in sec.columns:
                if e.scores.get(col) is not None:
                    out.setdefault(e.model, {})[f"{sec.benchmark}: {col}"] = (e, col)  # oldest first
    return out


def _columns(entries) -> list[str]:
    return [f"{sec.benchmark}: {col}" for sec in entries.sections for col in sec.columns]


def backbone_table(runs: list[StudyRunRow], entries) -> Table:
    """Tables 2/3: per backbone its base model and its TAPIR student."""
    from tapir.bench import model_key

    students = list(dict.fromkeys(r.student for r in runs))
    columns = _columns(entries) if entries else []
    scores = _latest_scores(entries) if entries else {}
    bases = {e.model: e.base for sec in (entries.sections if entries else []) for e in sec.entries if e.base}
    rows = []
    for student in students:
        mine = [r for r in runs if r.student == student]
        tapir_run = next((r for r in mine if r.setting == "full"), mine[-1])
        final = _final_checkpoint(tapir_run)
        key = model_key(final) if final else None
        base = bases.get(key) if key else None
        label = _label(student)
        for what, model in (("base", base), (f"TAPIR ({tapir_run.setting})", key)):
            got = scores.get(model, {}) if model else {}
            rows.append([label, what, *(f"{got[c][0].scores[got[c][1]]:.4g}" if c in got else "" for c in columns),
                         tapir_run.id if model == key else "", model or ""])
    note = None if columns else ("no benchmark results for the study's checkpoints: give evaluation.benchmarks in "
                                 "the config (or run `tapir bench` on the checkpoints), then write the report again")
    return Table("Backbones x benchmarks (Tables 2/3)", ["backbone", "model", *columns, "run", "model key"], rows,
                 note=note)


def provenance_table(entries, runs: list[StudyRunRow]) -> Table:
    """Every number's source: benchmark, model, judge, template, n, failures."""
    from tapir.bench import model_key

    shared: dict[str, tuple[str, int, list[str]]] = {}  # a checkpoint settings share (S0...) is named once
    for r in runs:
        for rnd, path in checkpoints_of(r.stages).items():
            shared.setdefault(model_key(path), (_label(r.student), rnd, []))[2].append(r.setting)
    names = {k: f"{label} S{rnd} ({', '.join(settings)})" for k, (label, rnd, settings) in shared.items()}
    rows = []
    for sec in entries.sections if entries else []:
        for e in sec.entries:
            if e.run_id is None:
                continue
            who = names.get(e.model) or (f"{_label(e.model)} (base)" if e.is_base else e.label)
            rows.append([sec.benchmark, who, _text(e.judge), _text(e.judge_mode), _text(e.template),
                         _text(e.data_version), e.n if e.n is not None else "", _text(e.failures),
                         ", ".join(f"{k} {v}" for k, v in sorted(e.failure_reasons.items())), e.status, e.run_id])
    return Table("Where each number comes from: judge and prompt template per benchmark run",
                 ["benchmark", "model", "judge", "judge mode", "prompt template", "data version", "n", "failures",
                  "failure reasons", "status", "benchmark run"], rows,
                 note=None if rows else "no benchmark runs for the study's models")


def _text(value: Any) -> str:
    from tapir.compare import MISSING

    return "" if value is None or value is MISSING or value == MISSING else str(value)


def failures_section(store: Store, runs: list[StudyRunRow], entries) -> Section:
    from tapir.runs import run_details

    section = Section("failures", "What failed",
                      intro="Runs that did not end done, stages that failed, items that ended failed (a re-run "
                            "of `tapir study` retries them), and benchmark runs with failed questions.")
    run_rows, stage_rows, item_rows = [], [], []
    for r in runs:
        details = run_details(store, r.id)
        failed_items = sum(s.get("failed") or 0 for s in details["stages"])
        run_rows.append([_label(r.student), r.setting, r.id, r.status, failed_items])
        for s in details["stages"]:
            if s["status"] == "failed":
                stage_rows.append([_label(r.student), r.setting, s["name"], s["round"],
                                   (s["info"].get("error") or "?").splitlines()[0][:300]])
        for f in details["failures"]:
            item_rows.append([_label(r.student), r.setting, f["stage"], f["round"], f["kind"], f["count"],
                              f["example_item"], (f["example"] or "")[:300]])
    bench_rows = []
    for sec in entries.sections if entries else []:
        for e in sec.entries:
            if e.run_id is not None and (e.failures not in (0, None) and _text(e.failures) not in ("", "0")
                                         or e.status not in ("ok", "done")):
                bench_rows.append([sec.benchmark, e.label, e.status, _text(e.failures),
                                   ", ".join(f"{k} {v}" for k, v in sorted(e.failure_reasons.items())), e.run_id])
    section.tables.append(Table("Runs", ["backbone", "setting", "run", "status", "failed items"], run_rows))
    section.tables.append(Table("Failed stages", ["backbone", "setting", "stage", "round", "error"], stage_rows,
                                note=None if stage_rows else "no stage failed"))
    section.tables.append(Table("Failed items by kind", ["backbone", "setting", "stage", "round", "kind", "count",
                                                         "example item", "example reason"], item_rows,
                                note=None if item_rows else "no failed items"))
    section.tables.append(Table("Benchmark runs with failures", ["benchmark", "model", "status", "failures",
                                                                 "reasons", "benchmark run"], bench_rows,
                                note=None if bench_rows else "no benchmark run had failures"))
    return section


def build_study_report(store: Store, name: str) -> StudyPage:
    runs = study_runs(store, name)
    students = list(dict.fromkeys(r.student for r in runs))
    paths = [p for r in runs for p in checkpoints_of(r.stages).values()]
    try:
        entries = _benchmark_entries(store, paths)
    except TapirError:
        entries = None
    overview = Section("backbones", "Backbones x benchmarks (Tables 2/3)",
                       intro="Each backbone's base model beside its TAPIR student (the full setting's last "
                             "checkpoint), from the latest benchmark run of each. The judge and prompt template "
                             "behind each number are listed under 'Where each number comes from'.")
    overview.tables.append(backbone_table(runs, entries))
    settings_sec = Section("settings", "Settings x benchmarks per backbone (Table 5)",
                           intro="Each setting of Table 5 is a run of a pipeline variant (docs/study.md). "
                                 "Examples, optimizer steps and tokens are the setting's own training (its "
                                 "curriculum rounds summed; full-alpaca: S0). Scores are those of its last "
                                 "checkpoint (full-alpaca: S0).")
    for student in students:
        pairs = [(r.setting, r.id) for r in runs if r.student == student]
        table = ablation_table(store, pairs)
        table.title = f"{_label(student)} ({student}): settings x benchmarks"
        settings_sec.tables.append(table)
    rounds_sec = Section("rounds", "Benchmark scores per round, per backbone (Fig. 3)",
                         intro="For each backbone, its base model and S0..S_N of its TAPIR run.")
    for student in students:
        mine = [r for r in runs if r.student == student]
        tapir_run = next((r for r in mine if r.setting == "full"), mine[-1])
        part = benchmark_rounds(store, tapir_run.stages)
        for fig in part.figures:
            fig.title = f"{_label(student)}: {fig.title}"
            fig.caption = f"{_label(student)} ({tapir_run.setting}, run {tapir_run.id}): {fig.caption}"
        for t in part.tables:
            t.title = f"{_label(student)}: {t.title}"
        rounds_sec.figures += part.figures
        rounds_sec.tables += part.tables
        rounds_sec.notes += [f"{_label(student)}: {n}" for n in part.notes]
    sources = Section("sources", "Where each number comes from",
                      intro="One row per benchmark run behind the tables above: the judge (model and mode) and "
                            "the prompt template the answers were generated with.")
    sources.tables.append(provenance_table(entries, runs))
    per_run = []
    for r in runs:
        per_run.append((r, [task_distribution(store, r.stages), mfd_distribution(store, r.stages)]))
    sections = [overview, settings_sec, rounds_sec, sources, failures_section(store, runs, entries)]
    return StudyPage(name, str(store.path), runs, sections, per_run, utcnow())


STUDY_CSS = (f"figure img{{max-height:{MAX_FIGURE_HEIGHT};width:auto;max-width:100%}}"
             "details{margin:.6em 0;border:1px solid #eee;padding:.3em .7em}"
             "summary{cursor:pointer;font-weight:600}")


def _section_html(s: Section, level: int = 2) -> list[str]:
    parts = [f'<section id="{_e(s.id)}"><h{level}>{_e(s.title)}</h{level}>']
    if s.intro:
        parts.append(f'<p class="intro">{_e(s.intro)}</p>')
    parts += [f'<p class="note">{_e(n)}</p>' for n in s.notes]
    parts += [_figure_html(f) for f in s.figures]
    parts += [_table_html(t) for t in s.tables]
    parts.append("</section>")
    return parts


def render_study_html(page: StudyPage) -> str:
    students = list(dict.fromkeys(r.student for r in page.runs))
    settings = list(dict.fromkeys(r.setting for r in page.runs))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>tapir study: {_e(page.name)}</title>", f"<style>{CSS}{STUDY_CSS}</style>", "</head><body>",
             f"<h1>tapir study {_e(page.name)}</h1>",
             f'<p class="meta">{len(page.runs)} run(s): {len(students)} backbone(s) '
             f"({_e(', '.join(_label(s) for s in students))}) x {len(settings)} setting(s) "
             f"({_e(', '.join(settings))}) · database {_e(page.db)} · report written {_e(page.generated_at)}</p>",
             "<nav>" + "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in page.sections)
             + '<a href="#runs">Each run (Figs. 5, 6)</a></nav>']
    for s in page.sections:
        parts += _section_html(s)
    parts.append('<section id="runs"><h2>Each run: task distribution (Fig. 5) and MFD per round (Fig. 6)</h2>')
    for run, sections in page.per_run:
        parts.append(f"<details><summary>{_e(_label(run.student))} · {_e(run.setting)} · run {_e(run.id)} · "
                     f"{_e(run.status)}</summary>")
        for s in sections:
            s.id = f"{s.id}-{run.id}"
            parts += _section_html(s, level=3)
        parts.append("</details>")
    parts.append("</section></body></html>")
    return "\n".join(parts)


def write_study_report(store: Store, name: str, path: str | Path | None = None) -> Path:
    """Write the study page of ``name`` to ``path`` (default
    ``study-<name>.html``) and return the path. Reads the store only."""
    page = build_study_report(store, name)
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
    out = Path(path) if path is not None else Path(f"study-{safe}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_study_html(page), encoding="utf-8")
    tmp.replace(out)
    return out
