"""Issue 20 item 7: the engine reads (and parses) a done key's stage row once
per run for the keys downstream of it, and reads the store again where it
must (the reuse check of run_step), and after it writes the key."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tapir.pipeline.engine import Engine, Step
from tapir.store.db import open_store


class Stage:
    reads = ()
    version = "1"
    max_failure_rate = 0.0

    def __init__(self, name):
        self.name = name

    def upstream(self, step):
        return ()

    def run(self, job):
        job.ok("a")


class CountingStore:
    """The store, counting the reads of stage rows."""

    def __init__(self, store):
        self.store, self.stage_reads = store, 0

    def execute(self, sql, params=()):
        if "from stages where key" in sql:
            self.stage_reads += 1
        return self.store.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self.store, name)


def recipe(n_down: int) -> list[Step]:
    # One upstream node (ingest), n_down nodes downstream of it.
    return [Step("ingest"), *(Step(f"s{i}", 0, (("ingest", 0),)) for i in range(n_down))]


def engine_on(tmp_path, n_down: int):
    store = CountingStore(open_store(tmp_path / "t.db"))
    marks = []
    run = SimpleNamespace(mark_stage=lambda *a, **k: marks.append(a))
    ctx = SimpleNamespace(config=None, store=store, run=run, tag_calls=lambda **tags: None)
    ctx.for_stage = lambda config: ctx
    stages = {s.stage: Stage(s.stage) for s in recipe(n_down)}
    return Engine(ctx, recipe(n_down), stages), store, marks


def done(store, key: str, fingerprint: str, run_id: str = "r0") -> None:
    with store.db.conn:
        store.db.conn.execute("insert or ignore into runs (id, name, status) values (?, 'r', 'done')", [run_id])
        store.db.conn.execute(
            "insert into stages (run_id, name, round, status, info, key) values (?, 'ingest', 0, 'done', ?, ?)",
            [run_id, json.dumps({"ok": 1, "_fingerprint": fingerprint}), key])


def test_a_done_upstream_row_is_read_once_for_all_downstream_keys(tmp_path):
    engine, store, _ = engine_on(tmp_path, 12)
    done(store.store, engine.key_of(("ingest", 0)), "f1")
    store.stage_reads = 0
    keys = [engine.key_of((f"s{i}", 0)) for i in range(12)]
    assert len(set(keys)) == 12
    assert store.stage_reads == 1  # not 12
    assert engine.fingerprint(("ingest", 0)) == "f1" and store.stage_reads == 1


def test_keys_depend_on_the_fingerprint_as_before(tmp_path):
    a, store_a, _ = engine_on(tmp_path / "a", 2)
    b, store_b, _ = engine_on(tmp_path / "b", 2)
    done(store_a.store, a.key_of(("ingest", 0)), "f1")
    done(store_b.store, b.key_of(("ingest", 0)), "f2")
    assert a.key_of(("s0", 0)) != b.key_of(("s0", 0))


def test_run_step_reads_the_store_again_and_forgets_the_row_it_rewrites(tmp_path):
    engine, store, marks = engine_on(tmp_path, 1)
    key = engine.key_of(("ingest", 0))
    assert engine._done_row(key) is None  # kept: not done when first asked
    done(store.store, key, "f9", run_id="other")  # another run finishes the key meanwhile
    assert engine._done_row(key) is None  # the kept answer
    result = engine.run_step(Step("ingest"))
    assert result.status == "reused" and result.reused_from == "other" and result.fingerprint == "f9"
    # A key this engine runs: its kept row is dropped when the stage starts writing.
    engine2, store2, marks2 = engine_on(tmp_path / "two", 1)
    key2 = engine2.key_of(("ingest", 0))
    assert engine2._done_row(key2) is None
    result = engine2.run_step(Step("ingest"))
    assert result.status == "done" and result.ok == 1
    assert key2 not in engine2._done_rows
    assert [m[3] for m in marks2] == ["running", "done"]
