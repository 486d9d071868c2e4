"""Running benchmarks into the store: one (benchmark, model, options) at a
time with :func:`run_benchmark`, or a suite of them over several models with
:func:`run_suite`.

Each benchmark run is a :class:`tapir.runs.Run` whose config is
``{"benchmark", "model", "options"}``; its rows go to ``benchmark_results``
(one row per benchmark, model, task and metric; a later run with other
options replaces the row and records its own ``run_id``). A run that is done
and has its rows is not repeated unless ``force``.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tapir.errors import TapirError
from tapir.runs import Run, run_id_for
from tapir.store.db import Store, dumps, utcnow

# --------------------------------------------------------------------------- models


def model_key(model: str) -> str:
    """The name results are stored under: local paths become absolute (so
    ``./out/r1`` and ``out/r1`` are one model); anything else is kept."""
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    return model


def bench_config(benchmark: str, model: str, options: dict[str, Any] | None) -> dict[str, Any]:
    return {"benchmark": benchmark, "model": model_key(model), "options": dict(options or {})}


def bench_run_id(benchmark: str, model: str, options: dict[str, Any] | None) -> str:
    """The id :func:`run_benchmark` gives this run (same hashing as Run.start)."""
    return run_id_for(bench_config(benchmark, model, options))


# --------------------------------------------------------------------------- rows


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["meta"] = json.loads(row["meta"]) if row.get("meta") else {}
    return row


def stored_rows(store: Store, *, run_id: str | None = None, benchmark: str | None = None,
                model: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``benchmark_results`` (meta decoded), filtered by what is given."""
    where, params = [], []
    for column, value in (("run_id", run_id), ("benchmark", benchmark), ("model", model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    table = store["benchmark_results"]
    rows = table.rows_where(" and ".join(where) or None, params, order_by="id")
    return [_decode(r) for r in rows]


_UPSERT = """
insert into benchmark_results (benchmark, model, task, metric, value, stderr, n, run_id, meta, created_at)
values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
on conflict (benchmark, model, task, metric) do update set
  value = excluded.value, stderr = excluded.stderr, n = excluded.n, run_id = excluded.run_id,
  meta = excluded.meta, created_at = excluded.created_at
"""


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if value != value else value  # NaN -> None


def upsert_rows(store: Store, benchmark: str, model: str, run_id: str, rows: list[dict[str, Any]]) -> int:
    """Write an evaluator's rows; a row with the same benchmark, model, task
    and metric is replaced. Returns the number written."""
    now = utcnow()
    values = []
    for row in rows:
        missing = [k for k in ("task", "metric", "value") if k not in row]
        if missing:
            raise TapirError(f"benchmark '{benchmark}' returned a row without {', '.join(missing)}: {row!r:.200}")
        meta = {**(row.get("meta") or {}), "run_id": run_id}
        n = row.get("n")
        values.append(
            (benchmark, model, str(row["task"]), str(row["metric"]), _number(row["value"]),
             _number(row.get("stderr")), int(n) if n is not None else None, run_id, dumps(meta), now)
        )
    with store.db.conn:
        store.db.conn.executemany(_UPSERT, values)
    return len(values)


# --------------------------------------------------------------------------- one benchmark


def evaluator_names() -> list[str]:
    from tapir.plugins import registry

    return registry().names("evaluators")


def _create(component, options: dict[str, Any]):
    """``component.create(**options)``, passing only the options the factory
    accepts when it takes no ``**kwargs`` (the rest still reach ``run``)."""
    factory = component.load()
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return factory(**options)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return factory(**options)
    names = {p.name for p in params}
    return factory(**{k: v for k, v in options.items() if k in names})


def is_done(store: Store, benchmark: str, model: str, options: dict[str, Any] | None = None) -> bool:
    """True when this (benchmark, model, options) ran to the end and its rows are stored."""
    run_id = bench_run_id(benchmark, model, options)
    stage = store["stages"].count_where("run_id = ? and name = ? and status = 'done'", [run_id, f"bench:{benchmark}"])
    return bool(stage) and bool(store["benchmark_results"].count_where("run_id = ?", [run_id]))


def run_benchmark(store: Store, benchmark: str, model: str, options: dict[str, Any] | None = None,
                  force: bool = False) -> list[dict[str, Any]]:
    """Run evaluator ``benchmark`` on ``model`` and store its rows; return the
    stored rows of this run (meta decoded). Nothing runs when the same run is
    done and its rows exist, unless ``force``."""
    from tapir.plugins import registry

    options = dict(options or {})
    component = registry().get("evaluators", benchmark)  # unknown names list the available ones
    config = bench_config(benchmark, model, options)
    key = config["model"]
    stage_name = f"bench:{benchmark}"
    if not force and is_done(store, benchmark, model, options):
        return stored_rows(store, run_id=bench_run_id(benchmark, model, options))
    run = Run.start(store, config, name=f"bench:{benchmark}:{model}")
    try:
        evaluator = _create(component, options)
        with run.stage(stage_name) as info:
            started = time.perf_counter()
            rows = evaluator.run(model, store, run_id=run.id, **options)
            info["rows"] = upsert_rows(store, benchmark, key, run.id, rows)
            info["evaluate_seconds"] = round(time.perf_counter() - started, 3)
    except BaseException:
        run.finish("failed")
        raise
    run.finish("done")
    return stored_rows(store, run_id=run.id)


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
        raise TapirError(f"{source}: a suite is a non-empty list of {{benchmark: NAME, options: {{...}}}}")
    entries = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"benchmark": item}
        if not isinstance(item, dict) or "benchmark" not in item:
            raise TapirError(f"{source}: entry {i + 1} needs a 'benchmark' key, got {item!r:.100}")
        extra = sorted(set(item) - {"benchmark", "options"})
        if extra:
            raise TapirError(f"{source}: entry {i + 1} has unknown key(s) {', '.join(extra)} "
                             f"(allowed: benchmark, options)")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise TapirError(f"{source}: entry {i + 1} options must be a mapping")
        entries.append(SuiteEntry(str(item["benchmark"]), dict(options)))
    return entries


def load_suite(name_or_path: str) -> list[SuiteEntry]:
    """A built-in suite by name, or a YAML file: a list of
    ``{benchmark: NAME, options: {...}}`` (or a mapping with ``benchmarks:``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise TapirError(f"{path}: not valid YAML: {exc}") from None
        return _suite_from_data(data, str(path))
    if name_or_path in BUILTIN_SUITES:
        return [SuiteEntry(e.benchmark, dict(e.options)) for e in BUILTIN_SUITES[name_or_path]]
    raise TapirError(
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
              fail_fast: bool = False, on_progress: Progress | None = None) -> list[SuiteResult]:
    """Every suite entry on every model, model by model; pairs already in the
    store are skipped. ``on_progress(i, total, result_or_None, benchmark,
    model)`` is called before (result None) and after each pair. A failing
    pair is recorded and the rest still run, unless ``fail_fast``."""
    from tapir.plugins import registry

    for entry in suite:  # fail before running anything when a name is wrong
        registry().get("evaluators", entry.benchmark)
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
            result.rows = run_benchmark(store, entry.benchmark, model, entry.options, force=force)
        except Exception as exc:
            result.status = "failed"
            result.error = str(exc) if isinstance(exc, TapirError) else f"{type(exc).__name__}: {exc}"
            if fail_fast:
                raise
        result.seconds = round(time.perf_counter() - started, 3)
        out.append(result)
        if on_progress:
            on_progress(i, len(pairs), result, entry.benchmark, model)
    return out
