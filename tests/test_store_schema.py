"""The SQLite store: a blank database migrates to exactly the expected
schema, in WAL mode; migrations are append-only, recorded, atomic and safe
when several processes open a blank database at once; --db / TAPIR_DB pick
the file.

When you add a migration, regenerate the expected text with

    python -c "from tapir.store import open_store; print(open_store(memory=True).schema())" \\
        > tests/expected_schema.sql

and review the diff: it is the schema change your migration makes.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from tapir.store import DEFAULT_DB, open_store, resolve_db_path
from tapir.store import migrations as migrations_mod
from tapir.store.migrations import MIGRATIONS, migrate

EXPECTED = (Path(__file__).parent / "expected_schema.sql").read_text()

TABLES = [
    "_migrations", "runs", "stages", "items", "llm_calls", "responses",
    "classifications", "rewrites", "checkpoints", "scores", "benchmark_results", "outcomes", "locks",
    "api_batches", "api_batch_requests",
    "judgments",  # rebuilt with its foreign keys by m005
]


def test_blank_database_migrates_to_exact_schema(tmp_path):
    store = open_store(tmp_path / "blank.db")
    try:
        assert store.schema().strip() == EXPECTED.strip()
        assert store.db.table_names() == TABLES
    finally:
        store.close()


def test_in_memory_store_has_the_same_schema():
    store = open_store(memory=True)
    assert store.schema().strip() == EXPECTED.strip()


def test_wal_and_foreign_keys_on(tmp_path):
    store = open_store(tmp_path / "wal.db")
    try:
        assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        store.close()
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(tmp_path / "wal.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_are_recorded_and_reopening_applies_nothing(tmp_path):
    path = tmp_path / "again.db"
    store = open_store(path)
    names = [row["name"] for row in store["_migrations"].rows_where(order_by="rowid")]
    assert names == [name for name, _ in MIGRATIONS]
    assert names[0] == "m001_initial"
    applied_at = {row["name"]: row["applied_at"] for row in store["_migrations"].rows}
    assert all(value.endswith("Z") and value.startswith("20") for value in applied_at.values())
    store.execute("insert into runs (id, name) values ('r1', 'kept')")
    store.close()

    store = open_store(path)
    try:
        assert migrate(store.db) == []  # nothing pending
        assert {row["name"]: row["applied_at"] for row in store["_migrations"].rows} == applied_at
        assert store.execute("select name from runs where id = 'r1'").fetchone() == ("kept",)
        assert store.schema().strip() == EXPECTED.strip()
    finally:
        store.close()


def test_migrate_returns_what_it_applied(tmp_path):
    db = sqlite_utils.Database(tmp_path / "plain.db")
    assert migrate(db) == [name for name, _ in MIGRATIONS]
    assert migrate(db) == []


def test_new_migration_is_applied_once_on_open(tmp_path, monkeypatch):
    path = tmp_path / "grow.db"
    open_store(path).close()

    def m999_add_notes(db):
        db["notes"].create({"id": int, "text": str}, pk="id")

    monkeypatch.setattr(migrations_mod, "MIGRATIONS", [*MIGRATIONS, ("m999_add_notes", m999_add_notes)])
    store = open_store(path)
    try:
        assert "notes" in store.db.table_names()
        assert [r["name"] for r in store["_migrations"].rows_where(order_by="rowid")][-1] == "m999_add_notes"
        assert migrate(store.db) == []
    finally:
        store.close()


def test_failed_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "half.db"
    open_store(path).close()

    def m999_broken(db):
        db["half_made"].create({"id": int}, pk="id")
        raise RuntimeError("bug in migration")

    monkeypatch.setattr(migrations_mod, "MIGRATIONS", [*MIGRATIONS, ("m999_broken", m999_broken)])
    with pytest.raises(RuntimeError, match="bug in migration"):
        open_store(path)

    db = sqlite_utils.Database(path)
    assert "half_made" not in db.table_names()  # the CREATE was rolled back
    assert "m999_broken" not in {r["name"] for r in db["_migrations"].rows}
    db.close()

    def m999_fixed(db):
        db["half_made"].create({"id": int}, pk="id")

    monkeypatch.setattr(migrations_mod, "MIGRATIONS", [*MIGRATIONS, ("m999_broken", m999_fixed)])
    store = open_store(path)  # the fixed migration applies cleanly
    try:
        assert "half_made" in store.db.table_names()
    finally:
        store.close()


def test_concurrent_first_open_migrates_once(tmp_path):
    path = tmp_path / "race.db"
    workers = 6
    barrier = threading.Barrier(workers)
    errors: list[str] = []

    def open_it():
        barrier.wait()
        try:
            open_store(path).close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=open_it) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_store(path)
    try:
        assert store.execute("select count(*) from _migrations").fetchone()[0] == len(MIGRATIONS)
        assert store.schema().strip() == EXPECTED.strip()
    finally:
        store.close()


# --- where the database lives ---------------------------------------------------


def test_resolve_db_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("TAPIR_DB", raising=False)
    assert resolve_db_path() == Path(DEFAULT_DB) == Path("tapir.db")
    monkeypatch.setenv("TAPIR_DB", str(tmp_path / "env.db"))
    assert resolve_db_path() == tmp_path / "env.db"
    assert resolve_db_path(tmp_path / "flag.db") == tmp_path / "flag.db"


def test_open_store_creates_parent_folders(tmp_path):
    store = open_store(tmp_path / "a" / "b" / "deep.db")
    store.close()
    assert (tmp_path / "a" / "b" / "deep.db").is_file()


@pytest.fixture
def cli_in(tmp_path, monkeypatch):
    from tapir.cli import _add_commands, cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPIR_DB", raising=False)
    _add_commands()

    def invoke(args, env=None, code=0):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_cli_default_db_is_tapir_db_in_cwd(cli_in, tmp_path):
    # `tapir runs` reads the database it is pointed at and never creates one.
    assert "no database at tapir.db" in cli_in(["runs"], code=2).output
    assert list(tmp_path.glob("*.db")) == []


def test_cli_tapir_db_env_overrides_default(cli_in, tmp_path):
    out = cli_in(["runs"], env={"TAPIR_DB": str(tmp_path / "from-env.db")}, code=2).output
    assert str(tmp_path / "from-env.db") in out
    assert list(tmp_path.glob("*.db")) == []


def test_cli_db_flag_beats_tapir_db(cli_in, tmp_path):
    out = cli_in(["--db", str(tmp_path / "flag.db"), "runs"], env={"TAPIR_DB": str(tmp_path / "from-env.db")},
                 code=2).output
    assert str(tmp_path / "flag.db") in out
    assert list(tmp_path.glob("*.db")) == []
