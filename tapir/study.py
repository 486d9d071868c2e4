"""A study: students x settings x benchmarks as one named set of runs
(``tapir study``, :func:`tapir.study`; docs/study.md).

The paper's Tables 2/3 put several backbones side by side, Table 5 several
training settings of one backbone. A study is their product: one run per
(student, setting), each the config with the student and the setting's
edits (Table 5's settings as :func:`tapir.pipeline.variants.ablations`
defines them), each evaluated on ``evaluation.benchmarks``. The runs go one
after another on one database; the engine is content addressed, so every
stage that does not read the axis (ingest, the teacher's answers, the
classification, the held-out answers; S0 and the judgments across the
settings of one student) is computed by the first run that needs it and
reused by the others.

Each run's stored config carries ``study: {name, student, setting}``: the
study report (:mod:`tapir.studyreport`) and ``tapir compare`` group runs by
it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tapir import progress
from tapir.errors import ConfigError

DEFAULT_SETTINGS = ("full",)


def all_settings() -> list[str]:
    """Table 5's settings, in the paper's order (full, TAPIR itself, last)."""
    from tapir.pipeline.variants import ablations

    return [v.label for v in ablations({})]


def parse_settings(settings: str | Sequence[str] | None) -> list[str]:
    """``"full-alpaca,full"`` or a list -> the settings, checked; None or
    empty: the full TAPIR setting only; ``all``: every Table 5 setting."""
    known = all_settings()
    if settings is None:
        return list(DEFAULT_SETTINGS)
    names = [s.strip() for s in (settings.split(",") if isinstance(settings, str) else settings) if s.strip()]
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--settings: unknown setting(s) {', '.join(unknown)}. Table 5's settings: "
                          f"{', '.join(known)} (or 'all'); e.g. --settings full-alpaca,full")
    if not names:
        return list(DEFAULT_SETTINGS)
    return list(dict.fromkeys(names))


@dataclass
class StudyRun:
    """One run of a study: a student backbone in one setting."""

    study: str
    student: str  # the backbone's model id
    label: str  # its short name in tables (the model folder or hub name)
    setting: str
    config: dict[str, Any]  # the run's full config, ``study`` included
    final_stage: tuple[str, int] | None = None  # None: the last train stage


def study_name(data: dict[str, Any]) -> str:
    study = data.get("study")
    if isinstance(study, dict) and study.get("name"):
        return str(study["name"])
    if isinstance(study, str) and study.strip():
        return study.strip()
    return str(data.get("name") or "study")


def _students(data: dict[str, Any]) -> list[dict[str, Any]]:
    refs = data.get("students") or ([data["student"]] if data.get("student") else [])
    return [copy.deepcopy(r) if isinstance(r, dict) else {"model": str(r)} for r in refs]


def student_labels(models: Sequence[str]) -> list[str]:
    """Short, distinct names: ``hf:/x/Llama-2-7b-hf`` -> ``Llama-2-7b-hf``."""
    short = [Path(m.split(":", 1)[-1].rstrip("/")).name or m for m in models]
    return [s if short.count(s) == 1 else f"{s}-{i + 1}" for i, s in enumerate(short)]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def study_runs(data: dict[str, Any], settings: Sequence[str]) -> list[StudyRun]:
    """The runs of the study of config ``data``: per student, per setting."""
    from tapir.pipeline.variants import _set, ablations

    name = study_name(data)
    students = _students(data)
    if not students:
        raise ConfigError("a study needs 'student' or 'students' in the config")
    for i, student in enumerate(students):  # the same backbone twice: a second run of the same study row
        first = next(j for j, other in enumerate(students) if other == student)
        if first != i:
            raise ConfigError(f"'students[{i}]' is the same as 'students[{first}]' ({student.get('model')!r}, "
                              f"the same options): each student once. Remove one, or give them different "
                              f"options")
    by_label = {v.label: v for v in ablations(data)}
    labels = student_labels([s.get("model", "") for s in students])
    out_root = Path(data.get("output_dir", "tapir-out")) / f"study-{_safe(name)}"
    runs = []
    for student, label in zip(students, labels):
        for setting in settings:
            variant = by_label[setting]
            cfg = copy.deepcopy(data)
            for key, value in variant.edits.items():
                _set(cfg, key, copy.deepcopy(value))
            cfg.pop("students", None)
            cfg["student"] = copy.deepcopy(student)
            cfg["study"] = {"name": name, "student": student.get("model"), "setting": setting}
            cfg["name"] = f"{name}/{label}/{setting}"
            cfg["output_dir"] = str(out_root / _safe(label) / setting)
            runs.append(StudyRun(name, student.get("model", ""), label, setting, cfg, variant.final_stage))
    return runs


def _load(config: str | Path | dict, overrides: Sequence[str] | None) -> tuple[dict[str, Any], Path]:
    from tapir.config import apply_overrides, config_base, read_yaml
    from tapir.config.loading import config_source, parse

    data = copy.deepcopy(config) if isinstance(config, dict) else read_yaml(config)
    if overrides:
        data = apply_overrides(data, list(overrides))
    # The config as written, before each run's copy replaces 'students' with its one 'student':
    # a key the runs' configs no longer have (student and students together) is checked here.
    parse(data, source=config_source(config, overrides))
    return data, config_base(config)


def _check_all(runs: list[StudyRun], db: str | None, base_dir: Path) -> list:
    """Preflight every run before the first one starts: one ConfigError
    naming the run, nothing written."""
    from tapir.pipeline.preflight import check

    checked = []
    for run in runs:
        try:
            checked.append(check(run.config, db, base_dir=base_dir))
        except ConfigError as exc:
            raise ConfigError(f"study {run.study}, student {run.student}, setting {run.setting}:\n{exc}") from None
    return checked


# --------------------------------------------------------------------------- the dry run


@dataclass
class RunPlan:
    run: StudyRun
    stages_run: int  # stages this run computes
    stages_reused: int  # stages already in the database or computed by an earlier run of the study
    calls: dict[str, int]  # role -> LLM calls this run makes
    tokens_in: int
    tokens_out: int
    steps: int | None  # optimizer steps this run trains (None: the trainer does not say)
    examples: int
    price: float | None  # $ estimate (None: a model has no price in litellm's map)
    unpriced: bool
    benchmarks: list[str]
    plan: Any = field(repr=False, default=None)  # tapir.pipeline.preflight.Plan


def plan_study(config: str | Path | dict, db: str | None = None, settings: Sequence[str] | None = None,
               overrides: Sequence[str] | None = None, retry: bool = True) -> list[RunPlan]:
    """The dry run of a study: every run checked, then planned in order, a
    stage that an earlier run of the study computes counted once. Nothing
    written, nothing called."""
    from tapir.pipeline.dryrun import plan

    data, base_dir = _load(config, overrides)
    runs = study_runs(data, parse_settings(settings))
    checked = _check_all(runs, db, base_dir)
    known: set[str] = set()
    out = []
    for run, c in zip(runs, checked):
        p = plan(c, retry=retry, known=frozenset(known))
        known |= {s.key for s in p.stages if s.key}
        calls: dict[str, int] = {}
        for (role, _model), n in p.calls.items():
            calls[role] = calls.get(role, 0) + n
        priced = [v for v in p.prices.values() if v is not None]
        trained = [s for s in p.stages if s.examples is not None]
        steps = [s.steps for s in trained]
        out.append(RunPlan(
            run, sum(not s.action.startswith("reuse") for s in p.stages),
            sum(s.action.startswith("reuse") for s in p.stages), calls,
            sum(i for i, _ in p.tokens.values()), sum(o for _, o in p.tokens.values()),
            sum(steps) if steps and all(isinstance(x, int) for x in steps) else (0 if not steps else None),
            sum(s.examples for s in trained), sum(priced) if priced else (0.0 if not p.prices else None),
            any(v is None for v in p.prices.values()),
            [b.name for b in c.config.evaluation.benchmarks], p))
    return out


def over_budget(plans: list[RunPlan]) -> list[str]:
    """The runs whose planned cost passes their budget.* (each run has its own
    budget, as a run of ``tapir distill`` has), one line each."""
    from tapir.budget import plan_over

    out = []
    for p in plans:
        limits = p.run.config.get("budget") or {}
        for line in plan_over(p.plan.prices if p.plan else {}, limits.get("max_cost_usd"),
                              limits.get("per_role") or {}):
            out.append(f"{p.run.label}/{p.run.setting}: {line}")
    return out


def render_plan(plans: list[RunPlan]) -> str:
    """The study's dry run: one row per student and setting, and a total."""
    from tapir.pipeline.dryrun import BATCH_DISCOUNT

    if not plans:
        return "an empty study"
    first = plans[0].run
    students = list(dict.fromkeys(p.run.label for p in plans))
    settings = list(dict.fromkeys(p.run.setting for p in plans))
    benches = plans[0].benchmarks
    lines = ["dry run: nothing was written and no model was called.", "",
             f"study {first.study}: {len(students)} student(s) x {len(settings)} setting(s) "
             f"({', '.join(settings)}) = {len(plans)} run(s); benchmarks: {', '.join(benches) or 'none'}", ""]
    head = (f"{'student':<22} {'setting':<17} {'stages run':>10} {'reused':>7} {'calls':>8} {'tokens in':>11} "
            f"{'tokens out':>11} {'examples':>9} {'steps':>6} {'price $':>9}  calls by role")
    lines += [head, "-" * len(head)]
    total_calls = total_in = total_out = total_steps = 0
    total_price = 0.0
    unpriced = steps_unknown = False
    for p in plans:
        n = sum(p.calls.values())
        total_calls += n
        total_in += p.tokens_in
        total_out += p.tokens_out
        if p.steps is None:
            steps_unknown = True
        else:
            total_steps += p.steps
        if p.price is not None:
            total_price += p.price
        unpriced = unpriced or p.unpriced
        price = "n/a" if p.price is None else f"{p.price:.4f}" + ("+?" if p.unpriced else "")
        roles = ", ".join(f"{r} {c:,}" for r, c in sorted(p.calls.items())) or "-"
        lines.append(f"{_short(p.run.label, 22):<22} {p.run.setting:<17} {p.stages_run:>10} {p.stages_reused:>7} "
                     f"{n:>8,} {p.tokens_in:>11,} {p.tokens_out:>11,} {p.examples:>9,} "
                     f"{'?' if p.steps is None else p.steps:>6} {price:>9}  {roles}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<22} {'':<17} {sum(p.stages_run for p in plans):>10} "
                 f"{sum(p.stages_reused for p in plans):>7} {total_calls:>8,} {total_in:>11,} {total_out:>11,} "
                 f"{sum(p.examples for p in plans):>9,} {str(total_steps) + ('+?' if steps_unknown else ''):>6} "
                 f"{total_price:>9.4f}  batch API ${total_price * BATCH_DISCOUNT:,.4f}"
                 + (" + models without a known price" if unpriced else ""))
    lines += ["", "students:"] + [f"  {p.run.label}: {p.run.student}" for p in plans if p.run.setting == settings[0]]
    lines += ["", "reused: the stage is in the database already, or an earlier run of this study computes it "
                  "(counted once); steps: optimizer steps this run trains; the judge calls of "
                  "evaluation.benchmarks are not in this plan."]
    assumptions = plans[0].plan.assumptions if plans[0].plan else []
    if assumptions:
        lines += ["", "assumptions:", *(f"  - {a}" for a in assumptions)]
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- running it


@dataclass
class StudyRunResult:
    """One finished run of a study."""

    student: str
    label: str
    setting: str
    run_id: str
    name: str
    status: str  # done | done_with_failures
    checkpoint: str | None  # the setting's result (full-alpaca: S0; else the last round)
    heldout_nll: float | None
    base_nll: float | None
    benchmarks: dict[str, float]  # "benchmark/task/metric" -> value, on the final checkpoint
    training: dict[str, Any]  # the setting's own training: rounds, examples, steps, tokens
    failed: int
    outcome: Any = field(repr=False, compare=False, default=None)


@dataclass
class StudyResult:
    """What :func:`run_study` (``tapir.study``) returns."""

    name: str
    db: Path
    runs: list[StudyRunResult]

    def run(self, student: str, setting: str = "full") -> StudyRunResult:
        """The run of ``student`` (model id or short label) in ``setting``."""
        for r in self.runs:
            if setting == r.setting and student in (r.student, r.label):
                return r
        have = ", ".join(f"{r.label}/{r.setting}" for r in self.runs)
        raise KeyError(f"no run of student {student!r} in setting {setting!r} in study {self.name} ({have})")


def run_study(config: str | Path | dict, db: str | None = None, settings: Sequence[str] | str | None = None,
              overrides: Sequence[str] | None = None, retry: bool | None = None) -> StudyResult:
    """Run every (student, setting) of the study of ``config`` in order on
    one database; every run passes preflight before the first one starts."""
    from tapir.pipeline.runner import distill
    from tapir.pipeline.variants import setting_training

    data, base_dir = _load(config, overrides)
    runs = study_runs(data, parse_settings(settings))
    _check_all(runs, db, base_dir)
    results = []
    store_path = None
    for run in runs:
        progress.say(f"== study {run.study}: student {run.label}, setting {run.setting}")
        outcome = distill(run.config, db, retry=retry, base_dir=base_dir)
        store_path = outcome.store.path
        trains = {n[1]: outcome.info(*n) for n in outcome.engine.by_node if n[0] == "train"}
        final = (run.final_stage or ("train", max(trains))) if trains else None
        nll = outcome.engine.results.get(("evaluate", final[1])) if final else None
        base = outcome.engine.results.get(("evaluate_base", 0))
        bench = outcome.engine.results.get(("benchmarks", final[1])) if final else None
        scores = {f"{b}/{metric}": value for b, metrics in ((bench.info if bench else {}).get("scores") or {}
                                                             ).items() for metric, value in metrics.items()}
        failed = sum(r.failed for r in outcome.results)
        results.append(StudyRunResult(
            run.student, run.label, run.setting, outcome.run.id, run.config["name"],
            "done_with_failures" if failed else "done", outcome.info(*final).get("path") if final else None,
            nll.info.get("nll") if nll else None, base.info.get("nll") if base else None, scores,
            setting_training(trains, final[1]) if final else {}, failed, outcome))
    return StudyResult(study_name(data), Path(store_path) if store_path else Path(db or "tapir.db"), results)


def result_table(result: StudyResult) -> list[str]:
    """One row per run: student, setting, what it trained, held-out loss, benchmark scores."""
    names = sorted({b for r in result.runs for b in r.benchmarks})
    head = (f"{'student':<22} {'setting':<17} {'run':<17} {'examples':>9} {'steps':>6} {'tokens':>9} "
            f"{'held-out nll':>13}" + "".join(f" {_short(n, 24):>24}" for n in names))
    lines = [f"study {result.name} ({result.db}):", head, "-" * len(head)]
    for r in result.runs:
        t = r.training
        nll = "n/a" if r.heldout_nll is None else f"{r.heldout_nll:.4f}"
        cells = "".join(f" {r.benchmarks[n]:>24.4f}" if n in r.benchmarks else f" {'n/a':>24}" for n in names)
        lines.append(f"{_short(r.label, 22):<22} {r.setting:<17} {r.run_id:<17} "
                     f"{'n/a' if t.get('examples') is None else t['examples']:>9} "
                     f"{'n/a' if t.get('steps') is None else t['steps']:>6} "
                     f"{'n/a' if t.get('tokens') is None else t['tokens']:>9} {nll:>13}{cells}")
    failed = [r for r in result.runs if r.failed]
    if failed:
        lines.append("failed items (re-run to retry): " + ", ".join(f"{r.label}/{r.setting} {r.failed}"
                                                                     for r in failed))
    return lines


# --------------------------------------------------------------------------- Python API


def study(config: str | os.PathLike | dict[str, Any], *, db: str | os.PathLike | None = None,
          settings: list[str] | str | None = None, overrides: list[str] | None = None,
          retry: bool | None = None, dry_run: bool = False):
    """Run the study of ``config`` as ``tapir study`` does (docs/study.md):
    every student (``students:``, or the one ``student:``) in every Table 5
    setting of ``settings`` (default ``["full"]``; ``"all"`` for all six),
    each evaluated on ``evaluation.benchmarks``, on one database; stages that
    do not depend on the student or the setting are computed once. Every run
    is checked before the first starts (:class:`tapir.errors.ConfigError`,
    nothing written).

    Returns a :class:`tapir.study.StudyResult` (``.runs``: student, setting,
    run id, checkpoint, held-out loss, benchmark scores, what it trained;
    ``.run(student, setting)``). ``dry_run``: nothing written or called;
    returns the plan instead, a list of :class:`tapir.study.RunPlan`
    (``tapir.study.render_plan(plans)`` prints it)."""
    from tapir.progress import quiet_libraries

    quiet_libraries()
    source = dict(config) if isinstance(config, dict) else Path(config)
    db_ = None if db is None else str(db)
    if dry_run:
        return plan_study(source, db_, settings, overrides, retry=retry is not False)
    return run_study(source, db_, settings, overrides, retry=retry)


class _CallableModule(type(copy)):
    """``tapir.study(...)`` calls :func:`study`; the module's
    functions (``tapir.study.plan_study``, ``render_plan``...) stay where they are."""

    def __call__(self, config, **kwargs):
        return study(config, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
