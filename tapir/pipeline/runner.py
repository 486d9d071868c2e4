"""``tapir distill``: check everything, take the run lock, run the recipe,
and say truthfully what happened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tapir import budget, progress
from tapir.budget import Budget
from tapir.config.loading import load_config
from tapir.config.schema import PipelineConfig
from tapir.pipeline.context import Context
from tapir.pipeline.engine import Engine, StageResult
from tapir.pipeline.run_engine import engine_for
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


def relink(ctx: Context, engine: Engine) -> None:
    """A re-run whose export stage is reused (same run, nothing changed)
    re-creates ``output_dir/checkpoints/round-N``: the checkpoints live in the
    database's ``<db name>-stages/`` folder, so a deleted output_dir loses only
    its links, and they come back without training again."""
    from tapir.pipeline.stagedirs import link_checkpoints

    export = engine.results.get(("export", 0))
    if export is None or export.status != "reused":
        return  # the export stage made them (or the recipe has none)
    paths = {r: res.info["path"] for (name, r), res in engine.results.items() if name == "train" and
             res.info.get("path")}
    _, missing = link_checkpoints(ctx.out_dir, paths)
    for line in missing:
        progress.say(f"   warning: {line}")


def run_budget(ctx: Context) -> Budget | None:
    """The run's budget (budget.max_cost_usd / per_role), starting from what its calls already cost."""
    cfg = ctx.config.budget
    if cfg.max_cost_usd is None and not cfg.per_role:
        return None
    return Budget(cfg.max_cost_usd, cfg.per_role, budget.spent_by_role(ctx.store, ctx.run.id))


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
            from tapir.dedup import forget_filters

            ctx.close_backends()
            forget_filters()  # the de-dup filter kept across this run's rounds
        relink(ctx, engine)
        failed = sum(r.failed for r in engine.results.values())
        ctx.run.finish("done" if not failed else "done_with_failures")
        return Outcome(ctx, [engine.results[s.node] for s in engine.steps], engine, spending)
    finally:
        lock.release()
