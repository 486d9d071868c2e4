"""Issue 20 item 7: a stage's context reads a scope's items from the store
once per stage run (a 1K profile had 111 ``ctx.items`` calls taking 14 s),
reads again after it writes that scope, and gives the same items."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from pipeline_helpers import ScriptPlugin, SpyPlugin, SpyTrainer, snapshot, write_config

from tapir.pipeline.context import Context
from tapir.roles import Item
from tapir.store.db import open_store


def _ctx(tmp_path) -> Context:
    return Context(None, open_store(tmp_path / "t.db"), None, Path("."), Path("out"))


def test_a_stage_context_reads_a_scope_once_until_it_writes_it(tmp_path):
    root = _ctx(tmp_path)
    root.add_items("a", [Item("1", "one", meta={"k": 1}), Item("2", "two")], "seed", 0)
    stage = root.for_stage(None)
    first = stage.items("a")
    assert [(it.id, it.instruction, it.meta) for it in first] == [
        ("1", "one", {"k": 1, "origin": "seed", "round": 0}), ("2", "two", {"origin": "seed", "round": 0})]
    first.append(Item("x", "a caller's list is its own"))
    for _ in range(5):
        assert [it.id for it in stage.items("a")] == ["1", "2"]
    assert stage.store_item_reads == 1
    assert stage.items("missing") == [] and stage.items("missing") == [] and stage.store_item_reads == 2
    assert stage.items(None) == [] and stage.store_item_reads == 2

    stage.add_items("a", [Item("3", "three")], "expanded", 1)  # its own write: read again
    assert [it.id for it in stage.items("a")] == ["1", "2", "3"] and stage.store_item_reads == 3

    # The next stage run has its own reads (it sees what the last one wrote).
    nxt = root.for_stage(None)
    assert [it.id for it in nxt.items("a")] == ["1", "2", "3"] and nxt.store_item_reads == 1
    # The run's own context (no stage) reads the store every time, as before.
    root.items("a"), root.items("a")
    assert root.store_item_reads == 2


@pytest.fixture
def pipeline_plugins(register_plugin):
    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    SpyTrainer.seen = []


def _stage(ctx: Context) -> str:
    return getattr(ctx.config, "_stage", "the run")  # a stage's ConfigView names its stage


def _run(tmp_path, tiny_model, monkeypatch, cache: bool):
    """The tiny 3-round pipeline; returns the db snapshot, ctx.items calls and
    store reads per (stage, scope), and writes per (stage, scope)."""
    from tapir.pipeline.runner import distill

    calls, reads, writes = Counter(), Counter(), Counter()
    items, read_items, add_items, for_stage = (Context.items, Context._read_items, Context.add_items,
                                              Context.for_stage)

    def counted_items(self, scope):
        calls[(_stage(self), scope)] += 1
        return items(self, scope)

    def counted_read(self, scope):
        reads[(_stage(self), scope)] += 1
        return read_items(self, scope)

    def counted_add(self, scope, new, origin, round):
        writes[(_stage(self), scope)] += 1
        return add_items(self, scope, new, origin, round)

    monkeypatch.setattr(Context, "items", counted_items)
    monkeypatch.setattr(Context, "_read_items", counted_read)
    monkeypatch.setattr(Context, "add_items", counted_add)
    if not cache:  # a stage context without its reads: every call goes to the store, as before
        monkeypatch.setattr(Context, "for_stage", lambda self, config: replace(for_stage(self, config),
                                                                               _item_reads=None))
    tmp_path.mkdir()
    out = distill(write_config(tmp_path, tiny_model), str(tmp_path / "t.db"))
    out.store.close()
    monkeypatch.undo()
    monkeypatch.setenv("TAPIR_QUIET", "1")
    return snapshot(tmp_path / "t.db"), calls, reads, writes


def test_each_stage_reads_each_scope_once_and_the_run_is_the_same(tmp_path, tiny_model, pipeline_plugins,
                                                                 monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    cached, calls, reads, writes = _run(tmp_path / "cached", tiny_model, monkeypatch, cache=True)
    SpyTrainer.seen = []
    plain, plain_calls, plain_reads, _ = _run(tmp_path / "plain", tiny_model, monkeypatch, cache=False)
    assert cached == plain  # the same rows in every table
    assert calls == plain_calls and plain_reads == plain_calls  # before: one store read per call
    for (stage, scope), n in reads.items():
        # once, or once more after each batch of its own writes to that scope (expand reads back its accepted)
        assert n <= 1 + (1 if writes[(stage, scope)] else 0), (stage, scope, n)
    assert sum(reads.values()) < sum(calls.values())
    # train in round 3 reads the ingest scope, each expand and rewrite scope once
    train3 = {scope: n for (stage, scope), n in reads.items() if stage == "train (round 3)"}
    assert train3 and set(train3.values()) == {1}
    assert sum(n for (stage, _), n in calls.items() if stage == "train (round 3)") > len(train3)
