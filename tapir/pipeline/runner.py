"""``tapir distill``: check everything, take the run lock, run the recipe,
and say truthfully what happened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tapir import budget, progress
from tapir.budget import Budget
from tapir.config import PipelineConfig, load_config
from tapir.pipeline.context import Context
from tapir.pipeline.data import load_items
from tapir.pipeline.engine import Engine, StageResult
from tapir.runs import Run
from tapir.store import open_store


@dataclass
class Outcome:
    """What ``distill`` returns: the context and every node's result."""

    ctx: Context
    results: list[StageResult]
    engine: Engine
    budget: Budget | None = None  # spend against budget.* (None without one)

    @property
    def run(self) -> Run:
        return self.ctx.run

    @property
    def store(self):
        return self.ctx.store

    @property
    def out_dir(self) -> Path:
        return self.ctx.out_dir

    def key(self, stage: str, round: int = 0) -> str | None:
        """The key (the rows' scope) of node (stage, round) in this run."""
        return self.engine.key_of((stage, round))

    def scores(self, stage: str, round: int, name: str) -> dict[str, float]:
        return self.ctx.scores(self.key(stage, round), name)

    def info(self, stage: str, round: int = 0) -> dict:
        return self.engine.results[(stage, round)].info


def open_run(config: PipelineConfig, base_dir: Path, store, *, loaded=None) -> Context:
    run = Run.start(store, config.model_dump(mode="json"), name=config.name)
    out_dir = Path(config.output_dir)
    if not out_dir.is_absolute():
        out_dir = (Path.cwd() / out_dir).resolve()
    ctx = Context(config, store, run, base_dir, out_dir)
    ctx.loaded = loaded
    return ctx


def run_budget(ctx: Context) -> Budget | None:
    """The run's budget (budget.max_cost_usd / per_role), starting from what its calls already cost."""
    cfg = ctx.config.budget
    if cfg.max_cost_usd is None and not cfg.per_role:
        return None
    return Budget(cfg.max_cost_usd, cfg.per_role, budget.spent_by_role(ctx.store, ctx.run.id))


def engine_for(ctx: Context, retry: bool | None = None) -> Engine:
    from tapir.pipeline.recipe import build, data_digest, stage_table

    cfg = ctx.config
    if ctx.loaded is None:  # inspection: read the data to know its rows' digest
        from tapir.pipeline.rowfit import fit_rows

        ctx.loaded, _ = fit_rows(cfg, load_items(cfg.data, ctx.base_dir), ctx.base_dir)  # as preflight reads it
    stages = stage_table()
    steps = build(cfg, stages, run_id=ctx.run.id, digest=data_digest(ctx.loaded),
                  judge_reads_answer=ctx.judge_reads_student_answer())
    return Engine(ctx, steps, stages, retry=cfg.failures.retry if retry is None else retry,
                  max_failure_rate=cfg.failures.max_failure_rate, circuit_breaker=cfg.failures.circuit_breaker,
                  max_draws=cfg.failures.max_draws)


def planning_engine(checked, retry: bool = True) -> Engine:
    """An engine over a checked config for the dry run: it reads what an
    existing database already holds (read-only) and writes nothing."""
    import sqlite3

    import sqlite_utils

    from tapir.runs import run_id_for
    from tapir.store import open_store
    from tapir.store.db import Store

    cfg = checked.config
    store = None
    if checked.db_path.is_file():
        try:
            conn = sqlite3.connect(f"file:{checked.db_path.resolve()}?mode=ro", uri=True)
            conn.execute("select scope from outcomes limit 1")  # m009 applied
            store = Store(sqlite_utils.Database(conn), checked.db_path)
        except sqlite3.Error:
            store = None  # an older or foreign database: nothing to reuse
    if store is None:
        store = open_store(memory=True)
    run = Run(store, run_id_for(cfg.model_dump(mode="json")), cfg.name)
    ctx = Context(cfg, store, run, checked.base_dir, Path(cfg.output_dir).resolve(), loaded=checked.loaded)
    return engine_for(ctx, retry)


def distill(config_path: str | Path | dict, db: str | None = None, *, retry: bool | None = None,
            wait: bool = False, overrides: list[str] | None = None, base_dir: Path | None = None) -> Outcome:
    """Preflight (every problem at once, nothing written), then the recipe
    under the run lock."""
    from tapir.locks import Lock
    from tapir.pipeline.preflight import check

    checked = check(config_path, db, overrides, base_dir=base_dir)
    config, report = checked.config, checked.loaded
    if config.students:
        from tapir.errors import ConfigError

        raise ConfigError(f"{checked.path or config.name}: a config with 'students' is a study, one run per "
                          f"student: run it with tapir.study(CONFIG) in Python, or `tapir study CONFIG` "
                          f"(`tapir distill CONFIG` runs the study too)")
    for line in report.bad_rows[:20]:
        progress.say(f"   skipped bad row: {line}")
    if len(report.bad_rows) > 20:
        progress.say(f"   ... and {len(report.bad_rows) - 20} more bad rows skipped")
    from tapir.runs import run_id_for

    store = open_store(checked.db_path)
    lock = Lock(store, f"run:{run_id_for(config.model_dump(mode='json'))}")
    try:
        lock.acquire(wait=wait)
    except BaseException:
        store.close()
        raise
    try:
        ctx = open_run(config, checked.base_dir, store, loaded=report)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        progress.say(f"run {ctx.run.id} ({config.name}) in {ctx.store.path}; outputs in {ctx.out_dir}")
        engine = engine_for(ctx, retry)
        spending = run_budget(ctx)
        try:
            with budget.use(spending):
                engine.run()
        except BaseException:
            ctx.run.finish("failed")
            raise
        finally:
            ctx.close_backends()
        failed = sum(r.failed for r in engine.results.values())
        ctx.run.finish("done" if not failed else "done_with_failures")
        return Outcome(ctx, [engine.results[s.node] for s in engine.steps], engine, spending)
    finally:
        lock.release()
