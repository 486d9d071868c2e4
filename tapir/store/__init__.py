"""The SQLite store: one database holds runs, stages, items, responses,
judgments, classifications, rewrites, checkpoints, scores, benchmark results
and every LLM call.

Rows are read and written through the typed functions of one module per
table (``items``, ``responses``, ``judgments``, ``scores``,
``classifications``, ``rewrites``, ``checkpoints``, ``outcomes``, ``stages``,
``runs``, ``benchmarks``, ``calls``, ``batches``, ``locks``; ``records``
for a benchmark run's own rows); no code outside this package runs SQL
(tests/test_store_boundary.py); :mod:`tapir.store.db` opens the file and
:mod:`tapir.store.migrations` keeps the schema."""

from tapir.store.db import DEFAULT_DB, Store, open_store, resolve_db_path

__all__ = ["DEFAULT_DB", "Store", "open_store", "resolve_db_path"]
