"""Append-only schema migrations, applied in order when a database opens.

Never edit or reorder a migration that has shipped: add a new one.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn):
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations; return the names applied.

    Each migration runs in one ``BEGIN IMMEDIATE`` transaction together with
    its ``_migrations`` row: one that fails halfway leaves nothing behind
    (SQLite DDL is transactional, but Python's sqlite3 autocommits DDL
    outside an explicit BEGIN), and two processes opening a blank database
    at once do not both try to create the tables (the second waits for the
    write lock, then finds the migration applied).
    """
    done = set()
    if "_migrations" in db.table_names():
        done = {row[0] for row in db.execute("select name from _migrations")}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
            if _is_applied(db, name):  # another process got there first
                db.conn.execute("COMMIT")
                continue
            fn(db)
            db.execute("insert into _migrations (name, applied_at) values (?, ?)", [name, _now(db)])
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _is_applied(db: sqlite_utils.Database, name: str) -> bool:
    return db.execute("select 1 from _migrations where name = ?", [name]).fetchone() is not None


def _now(db) -> str:
    return db.execute("select strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]


@migration
def m001_initial(db: sqlite_utils.Database):
    db["runs"].create(
        {
            "id": str,
            "name": str,
            "config": str,  # JSON, secrets removed
            "config_hash": str,
            "tapir_version": str,
            "status": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["stages"].create(
        {
            "id": int,
            "run_id": str,
            "name": str,
            "round": int,
            "status": str,  # running | done | failed
            "started_at": str,
            "finished_at": str,
            "seconds": float,
            "info": str,  # JSON
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["stages"].create_index(["run_id", "name", "round"], unique=True)

    db["items"].create(
        {
            "run_id": str,
            "id": str,
            "origin": str,  # seed | expanded | rewritten | benchmark
            "round": int,
            "instruction": str,
            "input": str,
            "output": str,
            "task_type": str,
            "meta": str,
        },
        pk=("run_id", "id"),
    )
    db["llm_calls"].create(
        {
            "id": int,
            "key": str,
            "model": str,
            "params": str,
            "messages": str,
            "sample": int,
            "response": str,
            "logprobs": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost": float,
            "latency_s": float,
            "error": str,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )
    db["llm_calls"].create_index(["key"])
    db["responses"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "role": str,  # teacher | student | rewriter | ...
            "model": str,
            "round": int,
            "sample": int,
            "text": str,
            "llm_call_id": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("llm_call_id", "llm_calls", "id")],
    )
    db["responses"].create_index(["run_id", "item_id", "role", "model", "round", "sample"], unique=True)
    db["judgments"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "judge": str,
            "model": str,
            "kind": str,  # pairwise | single | preference | reference | loss
            "position": str,  # ab | ba | single
            "round": int,
            "response_a_id": int,
            "response_b_id": int,
            "score_a": float,
            "score_b": float,
            "preference": float,
            "raw": str,  # the judge's full text(s), JSON list
            "error": str,
            "created_at": str,
        },
        pk="id",
    )
    db["judgments"].create_index(["run_id", "item_id", "judge", "position", "round"], unique=True)
    db["classifications"].create(
        {
            "run_id": str,
            "item_id": str,
            "classifier": str,
            "label": str,
            "confidence": float,
            "created_at": str,
        },
        pk=("run_id", "item_id", "classifier"),
    )
    db["rewrites"].create(
        {
            "run_id": str,
            "item_id": str,
            "new_item_id": str,
            "rewriter": str,
            "round": int,
            "created_at": str,
        },
        pk=("run_id", "item_id", "rewriter", "round"),
    )
    db["checkpoints"].create(
        {
            "id": int,
            "run_id": str,
            "round": int,
            "path": str,
            "base_model": str,
            "trainer": str,
            "metrics": str,
            "created_at": str,
        },
        pk="id",
    )
    db["checkpoints"].create_index(["run_id", "round"], unique=True)
    db["scores"].create(
        {
            "run_id": str,
            "item_id": str,
            "name": str,  # mfd | teacher_score | student_score | weight | ...
            "round": int,
            "value": float,
        },
        pk=("run_id", "item_id", "name", "round"),
    )
    db["benchmark_results"].create(
        {
            "id": int,
            "benchmark": str,
            "model": str,
            "task": str,
            "metric": str,
            "value": float,
            "stderr": float,
            "n": int,
            "run_id": str,
            "meta": str,  # versions, settings
            "created_at": str,
        },
        pk="id",
    )
    db["benchmark_results"].create_index(["benchmark", "model", "task", "metric"], unique=True)


@migration
def m002_stage_keys_outcomes_locks(db: sqlite_utils.Database):
    """Stages keyed by what they read, item outcomes, locks, a call log with meaning.

    Pipeline rows (items, responses, judgments, scores, classifications,
    rewrites, checkpoints) carry in ``run_id`` the *scope* that wrote them:
    the key of the pipeline stage (or the benchmark run's id). A run lists
    its stages, each with its key, in ``stages``; a stage whose key is done
    in any run is reused, never recomputed.
    """
    db["stages"].add_column("key", str)
    db["stages"].add_column("reused_from", str)  # run id whose stage of the same key this run reused
    db["stages"].create_index(["key"])
    db["outcomes"].create(
        {
            "stage_key": str,
            "item_id": str,
            "status": str,  # ok | failed
            "reason": str,  # a line a person can read
            "error_kind": str,  # http_429, timeout, parse, duplicate, ...
            "http_status": int,
            "llm_call_id": int,
            "attempts": int,
            "updated_at": str,
        },
        pk=("stage_key", "item_id"),
        foreign_keys=[("llm_call_id", "llm_calls", "id")],
    )
    db["outcomes"].create_index(["stage_key", "status"])
    db["locks"].create(
        {
            "name": str,  # run:<id> | stage:<key> | call:<cache key>
            "pid": int,
            "host": str,
            "acquired_at": str,
            "heartbeat_at": float,  # unix time
        },
        pk="name",
    )
    for column, kind in (("stage_key", str), ("role", str), ("item_id", str), ("round", int),
                         ("finish_reason", str)):
        db["llm_calls"].add_column(column, kind)
    db["llm_calls"].create_index(["stage_key"])
    db["rewrites"].add_column("instruction", str)
    db["rewrites"].add_column("refined_instruction", str)
    db["rewrites"].add_column("error", str)


@migration
def m003_benchmark_results_per_run(db: sqlite_utils.Database):
    """Benchmark rows are kept per run: two runs of one model and benchmark
    with different settings (a subset, another judge) keep their own rows
    instead of overwriting each other's (benchmark, model, task, metric)."""
    db.execute("drop index if exists idx_benchmark_results_benchmark_model_task_metric")
    db["benchmark_results"].create_index(["run_id", "benchmark", "model", "task", "metric"], unique=True)
    db["benchmark_results"].create_index(["benchmark", "model"])


@migration
def m004_api_batches(db: sqlite_utils.Database):
    """Provider batch jobs (OpenAI-style files + batches endpoints): one row
    per submitted batch, and which requests (by cache key) it carries, so a
    re-run (also after kill -9) polls and collects instead of resubmitting."""
    db["api_batches"].create(
        {
            "id": str,  # ours, sent as metadata.tapir_batch
            "model": str,  # the backend's model id (keys redacted)
            "provider_batch_id": str,
            "input_file_id": str,
            "output_file_id": str,
            "error_file_id": str,
            "status": str,  # submitting | validating | in_progress | completed | collected | failed | expired | cancelled
            "n_requests": int,
            "error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["api_batches"].create_index(["model", "status"])
    db["api_batch_requests"].create(
        {"batch_id": str, "request_key": str},
        pk=("batch_id", "request_key"),
        foreign_keys=[("batch_id", "api_batches", "id")],
    )
    db["api_batch_requests"].create_index(["request_key"])
