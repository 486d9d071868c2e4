"""A run's engine: its recipe built from the config over the stage table
(:func:`engine_for`), and the read-only one the dry run plans with
(:func:`planning_engine`). ``tapir distill`` (:mod:`tapir.pipeline.runner`)
and the dry run's plan (:mod:`tapir.pipeline.dryrun`) both use it."""

from __future__ import annotations

from pathlib import Path

from tapir.pipeline.context import Context
from tapir.pipeline.data import load_items
from tapir.pipeline.engine import Engine
from tapir.runs import Run


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
    from tapir.runs import run_id_for
    from tapir.store import open_store
    from tapir.store.db import open_current_for_reading

    cfg = checked.config
    store = open_current_for_reading(checked.db_path) if checked.db_path.is_file() else None
    if store is None:
        store = open_store(memory=True)
    run = Run(store, run_id_for(cfg.model_dump(mode="json")), cfg.name)
    ctx = Context(cfg, store, run, checked.base_dir, Path(cfg.output_dir).resolve(), loaded=checked.loaded)
    return engine_for(ctx, retry)
