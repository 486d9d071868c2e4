"""Reading a config's stages without running anything: their keys, computed
from the config and what the database already holds."""

from __future__ import annotations

from pathlib import Path


def engine_without_run(config_path: str | Path, db: str | None, overrides: list[str] | None = None):
    """An engine over CONFIG's recipe, against an existing database, with no
    run row written (keys of finished upstream stages come from the store)."""
    from tapir.config.loading import load_config
    from tapir.pipeline.context import Context
    from tapir.pipeline.run_engine import engine_for
    from tapir.runs import Run, run_id_for
    from tapir.store import open_store
    from tapir.store.db import resolve_db_path

    cfg = load_config(config_path, check_references=False, overrides=overrides)
    path = resolve_db_path(db or cfg.db)
    # inspection writes nothing, migrates nothing; a missing database or a
    # folder is the message (and exit 2) every command gives
    store = open_store(path, readonly=True)
    run = Run(store, run_id_for(cfg.model_dump(mode="json")), cfg.name)
    ctx = Context(cfg, store, run, Path(config_path).resolve().parent, Path(cfg.output_dir).resolve())
    return engine_for(ctx)


def stage_key_for(config_path, db, node, overrides=None):
    engine = engine_without_run(config_path, db, overrides)
    return engine.ctx.store, engine.key_of(node)
