"""The SQLite store: one database holds runs, stages, items, responses,
judgments, classifications, rewrites, checkpoints, scores, benchmark results
and every LLM call."""

from tapir.store.db import DEFAULT_DB, Store, open_store, resolve_db_path

__all__ = ["DEFAULT_DB", "Store", "open_store", "resolve_db_path"]
