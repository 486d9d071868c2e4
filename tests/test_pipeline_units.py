"""Pure parts of the pipeline: data loading, the seed cut, task allocation,
alpha and example weights, near-duplicate filtering, creator parsing."""

from __future__ import annotations

import json
import pytest

from tapir.config import DataConfig, MFDConfig
from tapir.errors import TapirError
from tapir.pipeline.stages.train import alpha_for, weighted_examples
from tapir.pipeline.data import item_id, load_items
from tapir.pipeline.mfd import distribution, select_hard
from tapir.pipeline.taskmix import allocate, resample
from tapir.roles import Item
from tapir.tasks import TASK_TYPES, paper_weights


def test_paper_weights():
    w = paper_weights()
    assert set(w) == set(TASK_TYPES) and len(w) == 32
    assert w["Math"] == w["Reasoning"] == pytest.approx(1 / 6)
    assert w["Code Generation"] == w["Code Debug"] == pytest.approx(1 / 12)
    assert w["Music"] == pytest.approx(0.5 / 28)
    assert sum(w.values()) == pytest.approx(1.0)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_alpaca_and_messages_with_bad_rows(tmp_path):
    f = write(tmp_path / "d.jsonl", [
        json.dumps({"instruction": "Add 2 and 3.", "input": "", "output": "5"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}),
        json.dumps({"instruction": "", "output": "x"}),
        json.dumps({"instruction": "Add 2 and 3.", "input": "", "output": "5"}),  # duplicate
        json.dumps({"prompt": "Name a colour.", "task_type": "Art"}),
    ])
    cfg = DataConfig(path=str(f), fields={"instruction": "prompt"})
    # "prompt" is now the instruction column: rows 1, 4, 5 have none (row 1, 5
    # still have "instruction" but that is no longer the mapped name)
    report = load_items(DataConfig(path=str(f)), tmp_path)
    assert [it.instruction for it in report.items] == ["Add 2 and 3.", "Say hi"]
    assert report.items[1].output == "hi"
    assert report.duplicates == 1
    assert [b.split(": ", 1)[0] for b in report.bad_rows] == [f"{f} line 2", f"{f} line 4", f"{f} line 6"]
    assert "not valid JSON" in report.bad_rows[0]
    mapped = load_items(cfg, tmp_path)
    assert [it.instruction for it in mapped.items] == ["Say hi", "Name a colour."]
    assert mapped.items[1].task_type == "Art"


def test_bad_rows_rejected_when_asked(tmp_path):
    f = write(tmp_path / "d.jsonl", [json.dumps({"instruction": "ok"}), json.dumps({"nothing": 1})])
    with pytest.raises(TapirError, match=r"(?s)1 bad row.*nothing was loaded.*line 2: no .instruction"):
        load_items(DataConfig(path=str(f), on_bad_row="error"), tmp_path)


def test_csv_json_parquet(tmp_path):
    csv_file = write(tmp_path / "d.csv", ["instruction,input,output", "Sum 1 and 1,,2", ",,"])
    report = load_items(DataConfig(path=str(csv_file)), tmp_path)
    assert [it.instruction for it in report.items] == ["Sum 1 and 1"]
    assert report.bad_rows == [f"{csv_file} line 3: 'instruction' is empty"]
    json_file = tmp_path / "d.json"
    json_file.write_text(json.dumps([{"instruction": "A"}, {"instruction": "B", "output": "b"}]))
    assert [it.output for it in load_items(DataConfig(path=str(json_file)), tmp_path).items] == [None, "b"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "P", "output": "q"}]), tmp_path / "d.parquet")
    items = load_items(DataConfig(path=str(tmp_path / "d.parquet"), limit=5), tmp_path).items
    assert (items[0].instruction, items[0].output, items[0].id) == ("P", "q", item_id("P"))


def test_hf_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"instruction": "X", "output": "y"}]).save_to_disk(str(tmp_path / "ds"))
    items = load_items(DataConfig(hf_dataset=str(tmp_path / "ds")), tmp_path).items
    assert [(it.instruction, it.output) for it in items] == [("X", "y")]


def test_select_hard_rules():
    mfd = {"a": 5.0, "b": 3.0, "c": 2.0, "d": -1.0, "e": 2.5}
    assert select_hard(mfd, MFDConfig(delta=2.0)).hard == {"a", "b", "e"}
    assert select_hard(mfd, MFDConfig(delta=None, top_fraction=0.4)).hard == {"a", "b"}
    cut = select_hard(mfd, MFDConfig(delta=None, quantile=0.5))
    assert cut.threshold == 2.5 and cut.hard == {"a", "b"}
    assert distribution([1.0, 2.0, 3.0])["median"] == 2.0


def test_allocate_follows_weights():
    w = paper_weights()
    counts = allocate(120, w, ["Math", "Reasoning", "Code Debug", "Music", "Art"])
    assert sum(counts.values()) == 120
    mass = w["Math"] * 2 + w["Code Debug"] + w["Music"] * 2
    assert counts["Math"] == pytest.approx(120 * w["Math"] / mass, abs=1)
    assert counts["Music"] == pytest.approx(120 * w["Music"] / mass, abs=1)


def test_resample_over_and_under():
    pool = [Item(f"m{i}", "q", task_type="Math") for i in range(2)] + [
        Item(f"w{i}", "q", task_type="Writing") for i in range(10)
    ]
    draws = resample(pool, 12, {"Math": 0.5, "Writing": 0.5}, seed=1)
    ids = [d.id for d in draws]
    assert sum(i.startswith("m") for i in ids) == 6  # 2 items drawn 3 times each: over-sampled
    assert len({i for i in ids if i.startswith("w")}) == 6  # 6 of 10 drawn once: under-sampled
    assert draws == resample(pool, 12, {"Math": 0.5, "Writing": 0.5}, seed=1)


def test_alpha_and_weights():
    assert [alpha_for(r, 0.3, 0.2) for r in (1, 2, 3)] == pytest.approx([0.3, 0.5, 0.7])
    assert alpha_for(6, 0.3, 0.2) == 1.0
    hard = [Item(f"h{i}", "q", output="a") for i in range(3)]
    easy = [Item(f"e{i}", "q", output="a") for i in range(7)]
    # Eq. 4 as written: alpha per hard example, 1 - alpha per easy one.
    ex = weighted_examples(hard, easy, 0.3)
    assert [e.weight for e in ex] == pytest.approx([0.3] * 3 + [0.7] * 7)
    # "share": the hard group holds alpha of the total weight, weights average 1.
    ex = weighted_examples(hard, easy, 0.3, "share")
    assert sum(e.weight for e in ex) == pytest.approx(10)
    assert sum(e.weight for e in ex[:3]) / 10 == pytest.approx(0.3)
    for scheme in ("eq4", "share"):
        assert all(e.weight == pytest.approx(1.0) for e in weighted_examples(hard, [], 0.3, scheme))


def test_near_duplicates_and_creator_cleaning():
    from tapir.dedup import NearDuplicateFilter
    from tapir_teachers.teacher import clean_instruction

    d = NearDuplicateFilter("rouge", 0.7, ["Write a poem about the sea in four lines."])
    assert not d.accept("Write a poem about the sea in four short lines.")
    assert d.accept("Explain how vaccines train the immune system.")
    assert not d.accept("Explain how vaccines train the immune system")
    assert clean_instruction("Instruction: 1. Describe a sunset over the ocean.\nAnswer: red") == (
        "Describe a sunset over the ocean."
    )
    assert clean_instruction("ok") is None
    assert clean_instruction("") is None


def test_paper_config_api_backends_build(tmp_path):
    """configs/paper.yaml's teacher, judge and rewriter load their litellm
    backends with the options the config gives (no call is made)."""
    from pathlib import Path

    from tapir.config import load_config
    from tapir.pipeline.context import Context
    from tapir.runs import Run
    from tapir.store import open_store

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "paper.yaml")
    store = open_store(tmp_path / "t.db")
    run = Run.start(store, cfg.model_dump(mode="json"), name=cfg.name)
    ctx = Context(cfg, store, run, root / "configs", tmp_path / "out")
    for role, ref in (("teacher", cfg.teacher.model), ("judge", cfg.judge.model), ("rewriter", cfg.rewriter.model),
                      ("classifier", cfg.classifier.model)):
        backend = ctx.backend(role, ref.model, ref.options)
        assert backend.model_id.startswith(f"litellm:{ref.model}")
        assert backend.tags["role"] == role
    store.close()
