"""Issue 20 item 7: what a stage frees goes back to the OS (glibc
``malloc_trim``) when the stage ends, so the resident set falls and the
next stages start from less (tapir/heap.py, the engine's run_step)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from tapir import heap
from tapir.pipeline.engine import Engine, Step
from tapir.store.db import open_store

glibc = pytest.mark.skipif(heap._malloc_trim() is None or heap.resident_mb() is None,
                           reason="malloc_trim and /proc are Linux/glibc only")


def churn(mb: int) -> list[bytes]:
    """Allocate about ``mb`` MB in malloc-sized blocks, free them but one in
    a thousand (the survivors pin the heap's top: glibc cannot shrink it by
    itself), and return the survivors."""
    blocks = [bytes(2000) + str(i).encode() for i in range(mb * 500)]
    survivors = blocks[::1000]
    del blocks
    return survivors


@glibc
def test_trim_gives_the_freed_heap_back():
    survivors = churn(200)
    before = heap.resident_mb()
    assert heap.trim() is True
    after = heap.resident_mb()
    assert before - after > 100, (before, after)  # 200 MB were freed; glibc kept them until the trim
    assert len(survivors) == 100


def test_trim_is_a_no_op_without_glibc(monkeypatch):
    heap._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert heap._malloc_trim() is None
        assert heap.trim() is False
    finally:
        heap._malloc_trim.cache_clear()


class Churning:
    """A stage that frees most of what it allocated, and notes the resident set as it ends."""

    name = "churn"
    reads = ()
    version = "1"
    max_failure_rate = 0.0

    def __init__(self):
        self.resident_at_end: float | None = None
        self.kept: list[bytes] = []

    def upstream(self, step):
        return ()

    def run(self, job):
        self.kept = churn(200)
        self.resident_at_end = heap.resident_mb()
        job.ok("a")


def engine_with(tmp_path, stage):
    store = open_store(tmp_path / "t.db")
    run = SimpleNamespace(mark_stage=lambda *a, **k: None)
    ctx = SimpleNamespace(config=None, store=store, run=run, tag_calls=lambda **tags: None)
    ctx.for_stage = lambda config: ctx
    return Engine(ctx, [Step(stage.name)], {stage.name: stage})


@glibc
def test_the_engine_trims_the_heap_when_a_stage_ends(tmp_path):
    stage = Churning()
    engine = engine_with(tmp_path, stage)
    result = engine.run_step(Step("churn"))
    assert result.status == "done"
    after = heap.resident_mb()
    assert stage.resident_at_end - after > 100, (stage.resident_at_end, after)


def test_the_engine_trims_after_the_stage_ran(tmp_path, monkeypatch):
    order: list[str] = []
    monkeypatch.setattr(heap, "trim", lambda: order.append("trim") or True)
    stage = Churning()
    stage.run = lambda job: (order.append("run"), job.ok("a"))
    engine_with(tmp_path, stage).run_step(Step("churn"))
    assert order == ["run", "trim"]
