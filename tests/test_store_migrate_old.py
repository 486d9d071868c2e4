"""A database written by main before ``m009_scope_and_item_fks``
(tests/data/db-before-scope.sqlite, made by tests/data/make_old_db.py)
opened with today's code: the migration runs, no row is lost, the data
tables say ``scope`` where they said ``run_id``, every row about an item
points at its ``items`` row by foreign key, one shape of ``judgments.raw``,
and ``tapir runs``, ``report`` and ``compare`` work on it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

OLD_DB = Path(__file__).parent / "data" / "db-before-scope.sqlite"
COUNTS = {"runs": 3, "stages": 15, "items": 22, "responses": 27, "judgments": 16, "scores": 36,
          "classifications": 8, "rewrites": 7, "checkpoints": 2, "outcomes": 65, "llm_calls": 36,
          "benchmark_results": 2}
SCOPED = ("items", "responses", "judgments", "scores", "classifications", "rewrites", "checkpoints", "outcomes")
ABOUT_ITEMS = ("responses", "judgments", "scores", "classifications", "rewrites", "outcomes")


def columns(conn, table):
    return [r[1] for r in conn.execute(f"pragma table_info([{table}])")]


@pytest.fixture
def migrated(tmp_path):
    from tapir.store import open_store

    db = tmp_path / "old.db"
    shutil.copy(OLD_DB, db)
    before = sqlite3.connect(db)
    assert "scope" not in columns(before, "responses")  # the file really is from before
    before.close()
    store = open_store(db)
    store.close()
    return db


def test_the_committed_file_is_todays_main_schema():
    conn = sqlite3.connect(f"{OLD_DB.resolve().as_uri()}?mode=ro", uri=True)
    names = [r[0] for r in conn.execute("select name from _migrations order by rowid")]
    conn.close()
    assert names[-1] == "m008_fresh_draws"
    assert OLD_DB.stat().st_size < 1_000_000


def test_migration_keeps_every_row_and_renames_run_id_to_scope(migrated):
    conn = sqlite3.connect(migrated)
    assert "m009_scope_and_item_fks" in {r[0] for r in conn.execute("select name from _migrations")}
    for table, n in COUNTS.items():
        assert conn.execute(f"select count(*) from [{table}]").fetchone()[0] == n, table
    for table in SCOPED:
        cols = columns(conn, table)
        assert "scope" in cols and "run_id" not in cols and "stage_key" not in cols, (table, cols)
    # stages.run_id, llm_calls.run_id and benchmark_results.run_id hold run ids: kept.
    for table in ("stages", "llm_calls", "benchmark_results"):
        assert "run_id" in columns(conn, table)
    conn.close()


def test_items_have_content_addressed_ids_and_every_row_about_an_item_points_at_it(migrated):
    from tapir.store.items import item_uid

    conn = sqlite3.connect(migrated)
    conn.execute("pragma foreign_keys = on")
    rows = conn.execute("select uid, scope, id, instruction, input, output from items").fetchall()
    assert len({r[0] for r in rows}) == len(rows) == COUNTS["items"]
    for uid, scope, iid, instruction, input_text, output in rows:
        assert uid == item_uid(scope, iid, instruction, input_text, output)
    for table in ABOUT_ITEMS:
        fks = {(r[3], r[2], r[4]) for r in conn.execute(f"pragma foreign_key_list([{table}])")}
        assert ("item_uid", "items", "uid") in fks, (table, fks)
        unlinked = [r[0] for r in conn.execute(f"select item_id from [{table}] where item_uid is null")]
        # Only the expand stage's outcomes per draw are about no stored item.
        assert unlinked == ([] if table != "outcomes" else ["draw-0", "draw-1", "draw-2"]), table
    assert conn.execute("pragma foreign_key_check").fetchall() == []
    # The link is right: a teacher answer's item is the item of that id in the same run.
    row = conn.execute(
        "select r.item_id, i.id, i.origin from responses r join items i on i.uid = r.item_uid "
        "where r.role = 'teacher' limit 1").fetchone()
    assert row[0] == row[1] and row[2] in ("seed", "expanded")
    conn.close()


def test_judgments_raw_is_one_shape_after_migration(migrated):
    conn = sqlite3.connect(migrated)
    raws = [json.loads(r[0]) for r in conn.execute("select raw from judgments")]
    conn.close()
    assert raws and all(isinstance(r, list) and all(isinstance(t, str) for t in r) for r in raws)
    details = [r for r in raws if r and r[0].startswith("{")]
    assert not details  # the judge stage's details moved out of raw


def test_new_rows_after_migration_get_their_item_link(migrated):
    from tapir.store import open_store
    from tapir.store.records import save_items, save_responses

    store = open_store(migrated)
    save_items(store, "bench-x", [{"id": "n1", "instruction": "New?", "meta": {}}])
    save_responses(store, "bench-x", "student", "m", [("n1", 0, "Yes.", None)])
    uid = store.execute("select item_uid from responses where scope = 'bench-x'").fetchone()[0]
    assert uid == store.execute("select uid from items where scope = 'bench-x' and id = 'n1'").fetchone()[0]
    assert store.execute("pragma foreign_key_check").fetchall() == []
    store.close()


def test_runs_report_and_compare_work_on_the_migrated_database(migrated, tmp_path, monkeypatch):
    from tapir.cli import _add_commands, cli

    _add_commands()
    monkeypatch.setenv("TAPIR_DB", str(migrated))
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    distil = [r for r in runs if r["name"] == "old-db"]
    assert len(distil) == 1
    shown = runner.invoke(cli, ["runs", "show", "old-db"], catch_exceptions=False)
    assert shown.exit_code == 0 and "judge" in shown.output and "teacher_answers" in shown.output
    out = tmp_path / "report.html"
    report = runner.invoke(cli, ["report", "old-db", "-o", str(out)], catch_exceptions=False)
    assert report.exit_code == 0, report.output
    assert "old-db" in out.read_text(encoding="utf-8")
    compared = runner.invoke(cli, ["compare", "--format", "json"], catch_exceptions=False)
    assert compared.exit_code == 0, compared.output
    values = sorted(row["value"] for row in _json_rows(compared.output))
    assert values == [5.0, 6.0]


def _json_rows(text):
    return [cell for row in json.loads(text)["rows"] for cell in row["cells"].values() if cell]
