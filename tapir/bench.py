"""Running benchmarks into the store: one (benchmark, model, options) at a
time with :func:`run_benchmark`, or a suite of them over several models with
:func:`run_suite`.

Each benchmark run is a :class:`tapir.runs.Run` whose config is
``{"benchmark", "model", "weights", "options"}`` (its id is the hash of that
config, so other options are another run). ``weights`` is the checkpoint's
weights fingerprint (:func:`tapir.benchmodel.weights_fingerprint`) for a
local folder, None otherwise: a folder retrained in place is another run,
never the old run's scores. What happens, in order:

1. **Preflight, before anything is written.** The options are validated
   against the evaluator's declared ``Options`` (``Component.create``), then
   the evaluator's ``preflight(model)`` lists every problem it can find
   without generating anything (model ids that do not resolve, missing API
   keys, unreadable data). Any problem raises :class:`PreflightFailed`
   (exit 2 in the CLI) and no run row is written.
2. A run that is ``done`` and has its rows is not repeated (unless ``force``).
3. The evaluator runs inside stage ``bench:NAME``; its rows replace the
   run's rows in ``benchmark_results`` (rows of other runs, e.g. the same
   model with other settings, are never touched).
4. **Failures.** Rows report in ``meta.failures`` the items that could not be
   scored. When the worst row's failure rate is above ``max_failure_rate``
   (default 0: any failure), the rows are stored flagged
   (``meta.run_failed``), the stage and the run are marked ``failed`` and
   :class:`BenchFailed` says which benchmark, how many, the most common
   reasons with an example. A re-run retries only the failures (evaluators
   keep what they scored and never store a failure as a result).
5. **force** redoes everything: the run's stored answers, judgments and
   scores are deleted and ``evaluator.run(..., force=True)`` is asked to
   bypass the LLM cache (``load_cached(..., refresh=True)``).

The evaluator protocol (see :class:`tapir.roles.Evaluator`): a nested
``Options`` model, ``__init__(self, options)``, optionally
``preflight(self, model) -> list[str]``, and
``run(self, model, store, *, run_id, force=False) -> rows``. ``force`` is
passed only when true, so an evaluator that does not take it still runs.
Each row is ``{task, metric, value, stderr, n, meta}`` with ``meta`` keys
``judge, judge_mode, failures, failure_reasons, failure_example,
data_version, subset`` (:data:`META_KEYS`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tapir.errors import ConfigError, TapirError
from tapir.runs import Run, run_id_for
from tapir.store import benchmarks
from tapir.store.db import Store, utcnow
from tapir.store.runs import run_status
from tapir.store.stages import stage_done

# What every evaluator row's meta carries (the contract between evaluators and bench/compare).
META_KEYS = ("judge", "judge_mode", "failures", "failure_reasons", "failure_example", "data_version", "subset")
# Options that select a part of a benchmark: used to label rows of old runs that lack meta.subset.
SUBSET_OPTIONS = ("limit", "question_ids", "ids", "samples", "categories", "instruction_ids")
# Tables where an evaluator keeps its answers and judgments under the run id, in
# their ``scope`` column (deleted by force).
RUN_TABLES = benchmarks.EVALUATOR_TABLES


class PreflightFailed(ConfigError):
    """Options, model ids or credentials are wrong; nothing was written."""


class BenchFailed(TapirError):
    """The run finished with failures above the threshold; rows are stored flagged."""

    def __init__(self, message: str, summary: "FailureSummary", rows: list[dict[str, Any]]):
        super().__init__(message)
        self.summary = summary
        self.rows = rows


# --------------------------------------------------------------------------- models


def model_key(model: str) -> str:
    """The name results are stored under: local paths become absolute (so
    ``./out/r1`` and ``out/r1`` are one model); anything else is kept."""
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    return model


def bench_config(benchmark: str, model: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """What a benchmark run's id hashes: the benchmark, the model's name,
    the weights it has now (local checkpoints) and the options."""
    from tapir.benchmodel import weights_fingerprint

    config: dict[str, Any] = {"benchmark": benchmark, "model": model_key(model)}
    weights = weights_fingerprint(model)
    if weights is not None:  # only local checkpoints: other models keep their earlier run ids
        config["weights"] = weights
    config["options"] = dict(options or {})
    return config


def bench_run_id(benchmark: str, model: str, options: dict[str, Any] | None) -> str:
    """The id :func:`run_benchmark` gives this run (same hashing as Run.start)."""
    return run_id_for(bench_config(benchmark, model, options))


def subset_label(options: dict[str, Any] | None) -> str | None:
    """A short text for the subset options select (``limit=10``), None for the full set."""
    parts = []
    for key in SUBSET_OPTIONS:
        value = (options or {}).get(key)
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ";".join(f"{k}:{','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                             for k, v in value.items())
        parts.append(f"{key}={value}")
    return " ".join(parts) or None


# --------------------------------------------------------------------------- preflight helpers


def model_problems(model_id: str, options: dict[str, Any] | None = None, *, what: str = "model") -> list[str]:
    """Problems with calling ``model_id`` that can be found without calling it:
    it does not resolve to a backend, or the backend's credentials are missing
    (named by variable). For evaluators' ``preflight``."""
    from tapir.models import resolve
    from tapir.plugins import registry

    try:
        spec = resolve(model_id, options)
        component = registry().get("backends", spec.backend)
        if not component.available:
            return [f"{what} '{model_id}': backend '{spec.backend}' is unavailable: {component.reason}"]
    except TapirError as exc:
        return [f"{what} '{model_id}': {exc}"]
    missing = missing_credentials(spec.backend, spec.name, spec.options)
    return [f"{what} '{model_id}': environment variable {var} is not set (export {var}=... before running)"
            for var in missing]


def missing_credentials(backend: str, name: str, options: dict[str, Any]) -> list[str]:
    """Environment variables backend ``backend`` needs for model ``name`` and
    does not find: the backend's own ``missing_credentials`` capability
    (tapir.roles.MissingCredentials), the one check; a backend without it
    needs none."""
    from tapir.plugins import registry

    component = registry().get("backends", backend)
    if "missing_credentials" not in component.capabilities:
        return []
    return list(component.capability("missing_credentials")(name, options))


# --------------------------------------------------------------------------- rows


def stored_rows(store: Store, *, run_id: str | None = None, benchmark: str | None = None,
                model: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``benchmark_results`` (meta decoded), filtered by what is given."""
    return benchmarks.result_rows(store, run_id=run_id, benchmark=benchmark, model=model)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if value != value else value  # NaN -> None


def upsert_rows(store: Store, benchmark: str, model: str, run_id: str, rows: list[dict[str, Any]],
                extra_meta: dict[str, Any] | None = None) -> int:
    """Store an evaluator's rows as the rows of run ``run_id``: the run's
    earlier rows are replaced, other runs' rows are untouched. Returns the
    number written."""
    now = utcnow()
    values = []
    for row in rows:
        missing = [k for k in ("task", "metric", "value") if k not in row]
        if missing:
            raise TapirError(f"benchmark '{benchmark}' returned a row without {', '.join(missing)}: {row!r:.200}")
        meta = {**(row.get("meta") or {}), **(extra_meta or {}), "run_id": run_id}
        n = row.get("n")
        values.append(
            (benchmark, model, str(row["task"]), str(row["metric"]), _number(row["value"]),
             _number(row.get("stderr")), int(n) if n is not None else None, run_id, benchmarks.encode_meta(meta), now)
        )
    benchmarks.replace_run_rows(store, run_id, benchmark, model, values)
    return len(values)


# --------------------------------------------------------------------------- failures


@dataclass
class FailureSummary:
    """The failures a run's rows report. Rows overlap (an overall row and one
    per category), so counts are not summed: the row with the most failures
    stands for the run."""

    failures: int | None  # None: no row says (an evaluator from before the meta contract)
    scored: int | None
    reasons: dict[str, int] = field(default_factory=dict)
    example: str | None = None
    task: str | None = None

    @property
    def rate(self) -> float:
        if not self.failures:
            return 0.0
        return self.failures / (self.failures + (self.scored or 0))

    def top_reasons(self, k: int = 3) -> list[tuple[str, int]]:
        return Counter(self.reasons).most_common(k)


def failure_summary(rows: list[dict[str, Any]]) -> FailureSummary:
    best: dict[str, Any] | None = None
    best_failures = -1
    for row in rows:
        meta = row.get("meta") or {}
        value = meta.get("failures")
        if value is None:
            continue
        if int(value) > best_failures:
            best, best_failures = row, int(value)
    if best is None:
        return FailureSummary(None, None)
    meta = best.get("meta") or {}
    reasons = {str(k): int(v) for k, v in (meta.get("failure_reasons") or {}).items()}
    return FailureSummary(best_failures, best.get("n"), reasons, meta.get("failure_example"), str(best["task"]))


def failure_message(benchmark: str, model: str, summary: FailureSummary, max_rate: float) -> str:
    total = summary.failures + (summary.scored or 0)
    lines = [f"{benchmark} on {model}: {summary.failures} of {total} items could not be scored "
             f"({summary.rate:.1%}, allowed {max_rate:.1%}); the run is marked failed and its rows are flagged."]
    top = summary.top_reasons()
    if top:
        lines.append("Most common reasons:")
        lines += [f"  {count} x {reason}" for reason, count in top]
    if summary.example:
        lines.append(f"Example: {summary.example}")
    lines.append("Fix, then re-run: the calls that failed (API errors, timeouts) are sent again; replies that came "
                 "but could not be scored are read again from the cache and fail the same way until the judge, its "
                 "options or its server change (--force asks everything again).")
    return "\n".join(lines)


# --------------------------------------------------------------------------- one benchmark


def evaluator_names() -> list[str]:
    from tapir.plugins import registry

    return registry().names("evaluators")


def create_evaluator(benchmark: str, options: dict[str, Any] | None):
    """The evaluator with validated options (unknown names list the available ones)."""
    from tapir.plugins import registry

    try:
        component = registry().get("evaluators", benchmark)
    except TapirError as exc:  # an unknown name on the command line or in a suite: nothing has run
        raise ConfigError(f"{exc} (`tapir bench list`)") from None
    return component.create(options=dict(options or {}), where=f"benchmark '{benchmark}' options")


def preflight(evaluator: Any, benchmark: str, model: str) -> None:
    """Raise :class:`PreflightFailed` listing every problem the evaluator finds."""
    problems = list(evaluator.preflight(model) or [])  # tapir.roles.Evaluator
    if problems:
        raise PreflightFailed(f"{benchmark} on {model}: nothing was run or written:\n"
                              + "\n".join(f"  {p}" for p in problems))


def is_done(store: Store, benchmark: str, model: str, options: dict[str, Any] | None = None) -> bool:
    """True when this (benchmark, model with its current weights, options)
    ran to the end without too many failures and its rows are stored."""
    run_id = bench_run_id(benchmark, model, options)
    return (run_status(store, run_id) == "done" and stage_done(store, run_id, f"bench:{benchmark}")
            and benchmarks.run_has_results(store, run_id))


def forget_run(store: Store, run_id: str) -> dict[str, int]:
    """Delete what an evaluator stored under ``run_id`` (answers, judgments,
    scores, result rows), so a forced run redoes everything."""
    return benchmarks.forget_run_rows(store, run_id)


def _say(message: str) -> None:
    from tapir.progress import say

    say(message)


def run_benchmark(store: Store, benchmark: str, model: str, options: dict[str, Any] | None = None,
                  force: bool = False, *, max_failure_rate: float = 0.0, evaluator: Any = None,
                  checked: bool = False) -> list[dict[str, Any]]:
    """Run evaluator ``benchmark`` on ``model`` and store its rows; return the
    stored rows of this run (meta decoded). See the module docstring for the
    order of checks. Raises :class:`PreflightFailed` (nothing written) or
    :class:`BenchFailed` (rows stored, flagged, run failed).

    ``evaluator``: one :func:`create_evaluator` already built for these
    options; ``checked``: its :func:`preflight` already passed."""
    if not 0.0 <= float(max_failure_rate) <= 1.0:
        raise ConfigError(f"max_failure_rate must be between 0 and 1, got {max_failure_rate}")
    options = dict(options or {})
    if evaluator is None:
        evaluator = create_evaluator(benchmark, options)
    config = bench_config(benchmark, model, options)
    run_id = run_id_for(config)
    if not force and is_done(store, benchmark, model, options):
        return stored_rows(store, run_id=run_id)
    if not checked:
        preflight(evaluator, benchmark, model)

    key = config["model"]
    stage_name = f"bench:{benchmark}"
    subset = subset_label(options)
    run = Run.start(store, config, name=f"bench:{benchmark}:{model}")
    _say(f"{benchmark} on {model}: run {run.id}" + (f" (subset {subset})" if subset else "")
         + (" (forced: stored answers deleted, LLM cache bypassed)" if force else ""))
    failed: BenchFailed | None = None
    try:
        with run.stage(stage_name) as info:
            if force:
                info["forced_deleted"] = forget_run(store, run.id)
            started = time.perf_counter()
            extra = {"force": True} if force else {}  # only when asked: older evaluators take no force
            rows = evaluator.run(model, store, run_id=run.id, **extra)
            summary = failure_summary(rows)
            info["evaluate_seconds"] = round(time.perf_counter() - started, 3)
            info["failures"] = summary.failures
            info["failure_reasons"] = summary.reasons
            info["max_failure_rate"] = max_failure_rate
            bad = bool(summary.failures) and summary.rate > max_failure_rate
            extra_meta = {"weights": config["weights"]} if config.get("weights") else {}
            if bad:
                extra_meta["run_failed"] = True
            info["rows"] = upsert_rows(store, benchmark, key, run.id, rows, extra_meta or None)
            if bad:
                message = failure_message(benchmark, model, summary, max_failure_rate)
                failed = BenchFailed(message, summary, stored_rows(store, run_id=run.id))
                raise failed
    except BaseException:
        run.finish("failed")
        raise
    run.finish("done")
    stored = stored_rows(store, run_id=run.id)
    _say(f"{benchmark} on {model}: {len(stored)} rows stored in {info['evaluate_seconds']:.1f}s"
         + (f", {summary.failures} failures (allowed by max_failure_rate={max_failure_rate})"
            if summary.failures else ""))
    return stored


# --------------------------------------------------------------------------- suites


@dataclass
class SuiteEntry:
    benchmark: str
    options: dict[str, Any] = field(default_factory=dict)


BUILTIN_SUITES: dict[str, list[SuiteEntry]] = {
    # What the TAPIR paper reports: MT-Bench, AlpacaEval 2.0, Open LLM Leaderboard v1.
    "paper": [
        SuiteEntry("mtbench"),
        SuiteEntry("alpacaeval"),
        SuiteEntry("lmeval", {"preset": "leaderboard-v1"}),
    ],
    "leaderboard-v1": [SuiteEntry("lmeval", {"preset": "leaderboard-v1"})],
    "leaderboard": [SuiteEntry("lmeval", {"preset": "leaderboard"})],
    # A first look: the leaderboard v1 tasks on 100 documents each.
    "quick": [SuiteEntry("lmeval", {"preset": "leaderboard-v1", "limit": 100})],
}


def _suite_from_data(data: Any, source: str) -> list[SuiteEntry]:
    if isinstance(data, dict) and set(data) <= {"benchmarks", "name", "description"} and "benchmarks" in data:
        data = data["benchmarks"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: a suite is a non-empty list of {{benchmark: NAME, options: {{...}}}}")
    entries = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"benchmark": item}
        if not isinstance(item, dict) or "benchmark" not in item:
            raise ConfigError(f"{source}: entry {i + 1} needs a 'benchmark' key, got {item!r:.100}")
        extra = sorted(set(item) - {"benchmark", "options"})
        if extra:
            raise ConfigError(f"{source}: entry {i + 1} has unknown key(s) {', '.join(extra)} "
                             f"(allowed: benchmark, options)")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{source}: entry {i + 1} options must be a mapping")
        entries.append(SuiteEntry(str(item["benchmark"]), dict(options)))
    return entries


def load_suite(name_or_path: str) -> list[SuiteEntry]:
    """A built-in suite by name, or a YAML file: a list of
    ``{benchmark: NAME, options: {...}}`` (or a mapping with ``benchmarks:``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        from tapir.config.yamlfile import read_yaml_document

        return _suite_from_data(read_yaml_document(path), str(path))
    if name_or_path in BUILTIN_SUITES:
        return [SuiteEntry(e.benchmark, dict(e.options)) for e in BUILTIN_SUITES[name_or_path]]
    raise ConfigError(
        f"unknown suite '{name_or_path}': not a file, nor a built-in suite "
        f"({', '.join(sorted(BUILTIN_SUITES))})"
    )


@dataclass
class SuiteResult:
    benchmark: str
    model: str
    options: dict[str, Any]
    status: str  # ran | skipped | failed
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


Progress = Callable[[int, int, SuiteResult | None, str, str], None]


def run_suite(store: Store, suite: list[SuiteEntry], models: list[str], *, force: bool = False,
              fail_fast: bool = False, on_progress: Progress | None = None,
              max_failure_rate: float = 0.0) -> list[SuiteResult]:
    """Every suite entry on every model, model by model; pairs already in the
    store are skipped. ``on_progress(i, total, result_or_None, benchmark,
    model)`` is called before (result None) and after each pair. A failing
    pair is recorded and the rest still run, unless ``fail_fast``. Every
    entry's options are validated before anything runs."""
    problems = []
    for entry in suite:  # fail before running anything when a name or an option is wrong
        try:
            create_evaluator(entry.benchmark, entry.options)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise PreflightFailed("\n".join(problems))
    pairs = [(m, e) for m in models for e in suite]
    out = []
    for i, (model, entry) in enumerate(pairs, 1):
        if on_progress:
            on_progress(i, len(pairs), None, entry.benchmark, model)
        started = time.perf_counter()
        result = SuiteResult(entry.benchmark, model, entry.options, "ran")
        try:
            if not force and is_done(store, entry.benchmark, model, entry.options):
                result.status = "skipped"
            result.rows = run_benchmark(store, entry.benchmark, model, entry.options, force=force,
                                        max_failure_rate=max_failure_rate)
        except Exception as exc:
            result.status = "failed"
            result.error = str(exc) if isinstance(exc, TapirError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, BenchFailed):
                result.rows = exc.rows
            if fail_fast:
                raise
        result.seconds = round(time.perf_counter() - started, 3)
        out.append(result)
        if on_progress:
            on_progress(i, len(pairs), result, entry.benchmark, model)
    return out


# --------------------------------------------------------------------------- Python API


def run(benchmark: str, model: str, options: dict[str, Any] | None = None, *, db: str | os.PathLike | None = None,
        force: bool = False, max_failure_rate: float = 0.0) -> list[dict[str, Any]]:
    """``tapir.bench.run("mtbench", "tapir-out/demo/checkpoints/round-3", {...})``:
    :func:`run_benchmark` on the database ``db`` (default: ``TAPIR_DB`` or
    ``./tapir.db``), returning the stored rows of this run (``task, metric,
    value, stderr, n, meta``...). Same checks, reuse and errors as
    ``tapir bench run`` (docs/python.md)."""
    from tapir.store import open_store

    store = open_store(db)
    try:
        return run_benchmark(store, benchmark, model, options, force=force, max_failure_rate=max_failure_rate)
    finally:
        store.close()
