"""The store layer: one encoding per column, read back by one function;
content-addressed item ids; the rows about an item linked to it as they are
written; the report package's public names; and the module graph (the store
imports no CLI, report or lock module)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def uids_of(store, scope: str, item_ids) -> dict[str, str]:
    """The oracle of the tests below: item id -> ``items.uid`` of the item
    a row (``scope``, item id) is about, for those of ``item_ids`` that have
    one, by the rule of the ``item_uid`` triggers (m009), in SQL: the item
    of that id in ``scope`` itself, else in a scope of a run that has
    ``scope`` as a stage (the latest written when several). The writers read
    the same rule from the store's kept maps (:func:`tapir.store.items.cached_uids`)."""
    ids = list(dict.fromkeys(item_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(store.db.conn.execute(f"select id, uid from items where scope = ? and id in ({','.join('?' * len(chunk))})",
                                   [scope, *chunk]).fetchall())
    rest = [i for i in ids if i not in found]
    for start in range(0, len(rest), 500):
        chunk = rest[start:start + 500]
        # ascending rowid: the latest written item of an id is the one kept
        found.update(store.db.conn.execute(
            f"select id, uid from items where id in ({','.join('?' * len(chunk))}) and scope in ("
            "select other.key from stages mine join stages other on other.run_id = mine.run_id "
            "where mine.key = ? and other.key is not null) order by rowid", [*chunk, scope]).fetchall())
    return found


def test_stage_info_has_one_decoder():
    from tapir.store.stages import decode_info, encode_info

    assert decode_info(encode_info({"ok": 3, "per_task": {"math": 1}})) == {"ok": 3, "per_task": {"math": 1}}
    assert decode_info(None) == decode_info("") == decode_info("not json") == decode_info("[1, 2]") == {}
    # Nobody else parses stages.info: no json.loads of an ``info`` outside tapir/store.
    offenders = []
    for path in (ROOT / "tapir").rglob("*.py"):
        if "store" in path.relative_to(ROOT / "tapir").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "loads"
                    and "info" in ast.unparse(node.args[0] if node.args else node)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_judgments_raw_is_a_list_and_details_an_object(store):
    from tapir.store.judgments import decode_raw, save_stage_judgment

    with store.db.conn:
        save_stage_judgment(store, "k1", "i1", "pairwise", "m", "pairwise", "both", 0, None, None, 8.0, 6.0, None,
                            ["Score 8", "Score 6"], {"read_by": "logprobs", "spread": {"mfd": 0.5}}, None, "logprobs")
        save_stage_judgment(store, "k1", "i2", "rouge", None, "reference", "single", 0, None, None, 10.0, 3.0, None,
                            [], {}, None, None)
    rows = store.execute("select item_id, raw, details from judgments order by item_id").fetchall()
    assert [(i, decode_raw(r)) for i, r, _ in rows] == [("i1", ["Score 8", "Score 6"]), ("i2", [])]
    assert json.loads(rows[0][2]) == {"read_by": "logprobs", "spread": {"mfd": 0.5}} and rows[1][2] is None
    from tapir.judge_reads import judgment_provenance

    assert judgment_provenance(store, "k1") == {"read_by": {"logprobs": 1}, "mean_mfd_spread": 0.5}


def test_item_uid_is_a_digest_of_the_row():
    from tapir.store.items import item_uid

    uid = item_uid("scope-a", "seed-1", "Say hi.", "", None)
    assert uid == item_uid("scope-a", "seed-1", "Say hi.", None, "")  # None and "" are one input
    assert len(uid) == 16 and int(uid, 16) >= 0
    assert len({uid, item_uid("scope-b", "seed-1", "Say hi.", "", None), item_uid("scope-a", "seed-2", "Say hi.", "", None),
                item_uid("scope-a", "seed-1", "Say hello.", "", None)}) == 4


def test_rows_written_under_a_stage_link_to_the_item_of_their_run(store):
    """A pipeline stage's rows live under its own key; the trigger finds the
    item in a scope of the same run (the ingest stage's), and only there."""
    from tapir.store import items, responses, scores

    with store.db.conn:
        store["runs"].insert_all([{"id": "run-a"}, {"id": "run-b"}])
        store["stages"].insert_all([
            {"run_id": "run-a", "name": "ingest", "round": 0, "key": "ingest-a"},
            {"run_id": "run-a", "name": "teacher_answers", "round": 0, "key": "answers-a"},
            {"run_id": "run-b", "name": "ingest", "round": 0, "key": "ingest-b"},
            {"run_id": "run-b", "name": "teacher_answers", "round": 0, "key": "answers-b"}])
        items.add_items(store, "ingest-a", [{"id": "x", "instruction": "A's x", "origin": "seed"}])
        items.add_items(store, "ingest-b", [{"id": "x", "instruction": "B's x", "origin": "seed"}])
        responses.add_response(store, "answers-a", "x", "teacher", "t", 0, "answer a", None)
        responses.add_response(store, "answers-b", "x", "teacher", "t", 0, "answer b", None)
        scores.set_scores(store, "answers-b", [("x", "mfd", 0, 1.5), ("nowhere", "mfd", 0, 2.0)])
    linked = dict(store.execute("select r.text, i.instruction from responses r join items i on i.uid = r.item_uid"))
    assert linked == {"answer a": "A's x", "answer b": "B's x"}
    assert dict(store.execute("select item_id, item_uid is not null from scores")) == {"x": 1, "nowhere": 0}
    assert store.execute("pragma foreign_key_check").fetchall() == []


def test_an_item_link_to_no_item_is_refused(store):
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        with store.db.conn:
            store.execute("insert into responses (scope, item_id, role, item_uid) values ('s', 'i', 'r', 'nope')")


def test_report_keeps_its_public_names():
    import tapir.report as report

    for name in ("build_report", "write_report", "render_html", "open_readonly", "find_run", "load_ablation",
                 "ablation_runs", "ablation_table", "benchmark_rounds", "task_distribution", "mfd_distribution",
                 "stage_section", "checkpoints_of", "Table", "Figure", "Section", "Report", "CSS"):
        assert hasattr(report, name), name
    assert report.build_report.__module__ == "tapir.report.page"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_cycles_through_the_store_locks_or_the_cli():
    store_imports = set().union(*(_imports(p) for p in (ROOT / "tapir" / "store").glob("*.py")))
    # The store sits below everything but the error and role types.
    assert {m for m in store_imports if m.startswith("tapir.") and not m.startswith("tapir.store")} <= {
        "tapir.errors", "tapir.roles"}, store_imports
    report_imports = set().union(*(_imports(p) for p in (ROOT / "tapir" / "report").glob("*.py")),
                                 _imports(ROOT / "tapir" / "studyreport.py"), _imports(ROOT / "tapir" / "runs.py"))
    assert not {m for m in report_imports if m.startswith("tapir.cli")}


def _linked_items(store):
    """Runs, stages and items whose ids a row under scope ``judge-a`` may be
    about (see the outcomes test below); returns the ids written and what
    the trigger's rule links each to (the item's instruction, or None)."""
    from tapir.store import items

    with store.db.conn:
        store["runs"].insert_all([{"id": "run-a"}, {"id": "run-b"}])
        store["stages"].insert_all([
            {"run_id": "run-a", "name": "ingest", "round": 0, "key": "ingest-a"},
            {"run_id": "run-a", "name": "rewrite", "round": 1, "key": "rewrite-a"},
            {"run_id": "run-a", "name": "judge", "round": 1, "key": "judge-a"},
            {"run_id": "run-b", "name": "ingest", "round": 0, "key": "ingest-b"}])
        items.add_items(store, "ingest-a", [{"id": "x", "instruction": "A's x"}, {"id": "y", "instruction": "A's y"}])
        items.add_items(store, "rewrite-a", [{"id": "y", "instruction": "A's y, rewritten"}])
        items.add_items(store, "ingest-b", [{"id": "z", "instruction": "B's z"}])
        items.add_items(store, "judge-a", [{"id": "own", "instruction": "in the row's own scope"}])
    return ["x", "y", "z", "own", "draw-1"], {"x": "A's x", "y": "A's y, rewritten", "z": None,
                                              "own": "in the row's own scope", "draw-1": None}


def _write_responses(store, ids):
    from tapir.store.responses import add_response

    with store.db.conn:
        for i in ids:
            add_response(store, "judge-a", i, "teacher", "m", 0, f"answer to {i}", None)


def _save_responses(store, ids):
    from tapir.store.records import save_responses

    save_responses(store, "judge-a", "answer", "m", [(i, 0, f"answer to {i}", None) for i in ids])


def _write_judgments(store, ids):
    from tapir.store.judgments import save_stage_judgment

    with store.db.conn:
        for i in ids:
            save_stage_judgment(store, "judge-a", i, "j", "m", "single", "a", 1, None, None, 7.0, None, None,
                                ["[[7]]"], None, None, "text")


def _save_judgments(store, ids):
    from tapir.roles import Judgment
    from tapir.store.records import JudgmentRow, save_judgments

    save_judgments(store, "judge-a", "j", "m", "single", [JudgmentRow(i, "a", 0, Judgment(score_a=7.0)) for i in ids])


def _write_scores(store, ids):
    from tapir.store.scores import set_scores

    with store.db.conn:
        set_scores(store, "judge-a", [(i, "mfd", 1, 0.5) for i in ids])


def _write_classifications(store, ids):
    from tapir.store.classifications import set_labels

    with store.db.conn:
        set_labels(store, "judge-a", "c", iter([(i, "coding", 0.9) for i in ids]))


def _write_rewrites(store, ids):
    from tapir.store.rewrites import add_rewrite

    with store.db.conn:
        for i in ids:
            add_rewrite(store, "judge-a", i, f"{i}-r", "rw", 1, f"instruction {i}", f"refined {i}")


@pytest.mark.parametrize("table, write", [
    ("responses", _write_responses), ("responses", _save_responses), ("judgments", _write_judgments),
    ("judgments", _save_judgments), ("scores", _write_scores), ("classifications", _write_classifications),
    ("rewrites", _write_rewrites)],
    ids=["responses.add_response", "records.save_responses", "judgments.save_stage_judgment",
         "records.save_judgments", "scores.set_scores", "classifications.set_labels", "rewrites.add_rewrite"])
def test_writers_that_know_the_item_carry_its_item_uid(store, table, write):
    """Each store writer of an item's row passes its item_uid itself (the
    trigger's rule, :func:`uids_of` above): with the m009
    trigger dropped the rows are linked all the same, a row about no item
    keeps NULL, and writing them again (an upsert, or an insert that keeps
    the row) links them the same."""
    
    ids, expected = _linked_items(store)
    with store.db.conn:
        store.db.conn.execute(f"drop trigger {table}_item_uid")
    for _ in range(2):
        write(store, ids)
        got = dict(store.execute(f"select t.item_id, i.instruction from {table} t left join items i "
                                 f"on i.uid = t.item_uid where t.scope = 'judge-a'"))
        assert got == expected
    linked = dict(store.execute(f"select item_id, item_uid from {table} "
                                f"where scope = 'judge-a' and item_uid is not null"))
    assert linked == uids_of(store, "judge-a", ids)
    assert store.execute("pragma foreign_key_check").fetchall() == []


def test_outcomes_carry_the_item_uid_the_trigger_would_give(store):
    """save_outcomes looks up each row's item_uid itself (all rows of a scope
    at once), by the trigger's rule: the item in the row's own scope, else in
    a scope of a run that has the row's scope as a stage, the latest written;
    a row about no item keeps NULL. The same rows inserted without item_uid
    (the trigger fills it) get the same values."""
    from tapir.store import outcomes
    
    ids, _ = _linked_items(store)  # y's later rewrite wins; z is another run's item, not ours
    rows = [("judge-a", i, "ok", None, None, None, None, 1, "now", 1, 0) for i in ids]
    outcomes.save_outcomes(store, rows)
    got = dict(store.execute("select item_id, i.instruction from outcomes o left join items i on i.uid = o.item_uid "
                             "where o.scope = 'judge-a'"))
    assert got == {"x": "A's x", "y": "A's y, rewritten", "z": None, "own": "in the row's own scope", "draw-1": None}
    explicit = dict(store.execute("select item_id, item_uid from outcomes where scope = 'judge-a'"))
    assert {k: v for k, v in explicit.items() if v} == uids_of(store, "judge-a", ids)
    with store.db.conn:  # the same rows, linked by the trigger
        store.db.conn.executemany("delete from outcomes where scope = ? and item_id = ?", [("judge-a", i) for i in ids])
        store.db.conn.executemany(f"insert into outcomes ({', '.join(outcomes.COLUMNS)}) values "
                                  f"({', '.join('?' * len(outcomes.COLUMNS))})", rows)
    assert dict(store.execute("select item_id, item_uid from outcomes where scope = 'judge-a'")) == explicit
    assert store.execute("pragma foreign_key_check").fetchall() == []


def _item_queries(store) -> list[str]:
    log: list[str] = []
    store.db.conn.set_trace_callback(lambda sql: log.append(sql) if "from items" in sql.lower() else None)
    return log


@pytest.mark.parametrize("table, write", [
    ("responses", _write_responses), ("judgments", _write_judgments), ("rewrites", _write_rewrites),
    ("scores", _write_scores)],
    ids=["responses.add_response", "judgments.save_stage_judgment", "rewrites.add_rewrite", "scores.set_scores"])
def test_writers_read_item_uids_without_a_query_per_row(store, table, write):
    """The uid of a row's item comes from maps the store reads once per
    scope (its own items, then the latest item of each id in its run), not
    from a query per row: 200 rows ask items at most twice, and writing
    them again asks nothing."""
    from tapir.store.items import add_items

    ids, expected = _linked_items(store)
    with store.transaction():
        add_items(store, "ingest-a", [{"id": f"n{i}", "instruction": f"item {i}"} for i in range(200)])
    ids = ids + [f"n{i}" for i in range(200)]
    asked = _item_queries(store)
    write(store, ids)
    first = len(asked)
    write(store, ids)
    store.db.conn.set_trace_callback(None)
    assert first <= 2 and len(asked) == first, asked
    linked = dict(store.execute(f"select item_id, item_uid from {table} where scope = 'judge-a' and item_uid is not null"))
    assert linked == uids_of(store, "judge-a", ids)
    assert len(linked) == 203  # x, y, own and the 200 new ones


def test_the_uid_maps_follow_every_write_by_the_triggers_rule(store):
    """Items added under the row's own scope, under another scope of its
    run (the latest written wins), under another run's scope, a stage added
    to the run, a rolled-back transaction: after each, the uid a writer
    gives (the kept maps) is the one the SQL rule gives."""
    from tapir.store import items, stages
    from tapir.store.items import cached_uids

    ids, _ = _linked_items(store)
    ids += ["late", "moved"]

    def agree():
        assert cached_uids(store, "judge-a", ids) == uids_of(store, "judge-a", ids)
        assert cached_uids(store, "rewrite-a", ids) == uids_of(store, "rewrite-a", ids)
        assert cached_uids(store, "ingest-b", ids) == uids_of(store, "ingest-b", ids)

    agree()  # the maps are read here
    steps = [
        lambda: items.add_items(store, "judge-a", [{"id": "late", "instruction": "own, added after the read"}]),
        lambda: items.add_items(store, "ingest-a", [{"id": "moved", "instruction": "in the run"}]),
        lambda: items.add_items(store, "rewrite-a", [{"id": "moved", "instruction": "in the run, later"},
                                                     {"id": "x", "instruction": "x rewritten"}]),
        lambda: items.add_items(store, "rewrite-a", [{"id": "x", "instruction": "kept: insert or ignore"}]),
        lambda: items.add_items(store, "ingest-b", [{"id": "moved", "instruction": "another run's"}]),
        lambda: stages.add_stage(store, {"run_id": "run-b", "name": "judge", "round": 1, "key": "judge-a"}),
        lambda: items.add_items(store, "ingest-b", [{"id": "b-only", "instruction": "now a sibling"}]),
        lambda: items.add_items(store, "elsewhere", [{"id": "z", "instruction": "a scope of no run"}]),
    ]
    ids.append("b-only")
    for step in steps:
        with store.transaction():
            step()
        agree()
    assert cached_uids(store, "judge-a", ["x", "moved", "b-only"]) == uids_of(store, "judge-a", ["x", "moved", "b-only"])
    assert len(cached_uids(store, "judge-a", ["x", "moved", "b-only"])) == 3
    with pytest.raises(RuntimeError):
        with store.transaction():
            items.add_items(store, "judge-a", [{"id": "gone", "instruction": "rolled back"}])
            assert cached_uids(store, "judge-a", ["gone"])  # seen inside the transaction
            raise RuntimeError
    ids.append("gone")
    agree()
    assert cached_uids(store, "judge-a", ["gone"]) == {}
