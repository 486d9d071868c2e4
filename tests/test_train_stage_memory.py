"""Issue 20 item 7: a training round builds its hard pool D_P once (the
coverage it reports reads the same pool), not a second copy of every pool
item with every teacher answer read again after the training."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from tapir.pipeline.stages import train as train_stage
from tapir.roles import Item


def test_a_round_builds_its_hard_pool_once(monkeypatch, tmp_path):
    pool = [Item(f"h{i}", f"hard {i}", "", f"answer {i}", "Math") for i in range(6)]
    easy = [Item(f"e{i}", f"easy {i}", "", f"answer {i}", "Writing") for i in range(4)]
    built: list[int] = []
    trained: list[int] = []

    def hard_pool(job, r):
        built.append(r)
        return list(pool)

    monkeypatch.setattr(train_stage, "hard_pool", hard_pool)
    monkeypatch.setattr(train_stage, "easy_seed", lambda job: easy)
    monkeypatch.setattr(train_stage, "teacher_answers_upto", lambda job, r: {})
    monkeypatch.setattr(train_stage, "with_answers", lambda items, answers: list(items))
    monkeypatch.setattr(train_stage, "hard_seed", lambda job: pool[:2])
    monkeypatch.setattr(train_stage, "save_checkpoint", lambda *a, **k: None)
    trainer = SimpleNamespace(train=lambda base, examples, out: trained.append(len(examples)) or {"loss": 1.0})
    monkeypatch.setattr(train_stage, "trainer_for", lambda job: trainer)
    config = SimpleNamespace(
        curriculum=SimpleNamespace(sampling="natural", upsample_limit=None, alpha=0.5, alpha_step=0.0,
                                   weighting="eq4", start_from="previous"),
        resample=SimpleNamespace(weights="uniform"), seed=0, student=SimpleNamespace(model="m"),
        trainer=SimpleNamespace(name="hf"))
    ctx = SimpleNamespace(config=config, store=SimpleNamespace(transaction=contextlib.nullcontext),
                          close_backends=lambda: None)
    job = SimpleNamespace(ctx=ctx, config=config, round=2, key="k", info={},
                          upstream_info=lambda stage, r: {"path": str(tmp_path / "prev")},
                          artifact_dir=lambda name: tmp_path / name)
    train_stage.Train().run(job)
    assert built == [2]  # once, not again for the coverage
    assert trained == [10] and job.info["examples"] == 10 and job.info["hard_examples"] == 6
    assert job.info["coverage"]["available"] == 6 and job.info["coverage"]["used"] == 6
    assert job.info["coverage"]["seeds_available"] == 2
