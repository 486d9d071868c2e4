"""Issue 20 item 7: with ``max_steps``, the ``hf`` trainer tokenises only the
rows the first ``max_steps`` steps read (when its sampler reads no lengths),
and trains on exactly the batches of the whole set tokenised up front."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapir.roles import TrainExample  # noqa: E402


def _examples(n: int) -> list[TrainExample]:
    out = []
    for i in range(n):
        words = " ".join(["step"] * (2 + (i * 7) % 30))
        out.append(TrainExample([{"role": "user", "content": f"Question {i}: explain."}], f"{words} done {i}.",
                                1.0 + (i % 3)))
    # a prompt of max_length tokens or more is dropped: the kept rows are known before any response
    out.insert(5, TrainExample([{"role": "user", "content": "word " * 200}], "ok", 1.0))
    return out


def _trainer(**options):
    from tapir.plugins import registry

    return registry().get("trainers", "hf").create(options=options)


OPTS = dict(batch_size=4, micro_batch_size=2, max_steps=3, lr=1e-3, seed=0, save_steps=1000, max_length=64,
            group_by_length=False)


def _train(tiny_model, out, monkeypatch, *, up_front: bool, **extra):
    """Train; return (metrics, the micro-batches' input ids as collated, texts the tokeniser was given)."""
    from tapir_trainers import collate, train_rows

    batches: list[list[list[int]]] = []
    texts = [0]
    pad_call, ids = collate.PadCollator.__call__, collate._ids

    def recording_pad(self, features):
        batches.append([list(f["input_ids"]) for f in features])
        return pad_call(self, features)

    def counting_ids(tokenizer, batch):
        texts[0] += len(batch)
        return ids(tokenizer, batch)

    with monkeypatch.context() as m:
        m.setattr(collate.PadCollator, "__call__", recording_pad)
        m.setattr(collate, "_ids", counting_ids)
        if up_front:  # today's way: every row tokenised before training
            m.setattr(train_rows, "read_all_reason", lambda opts, needed, available: "forced by the test")
        metrics = _trainer(**{**OPTS, **extra}).train(str(tiny_model), _examples(64), str(out))
    return metrics, batches, texts[0]


@pytest.mark.parametrize("weighting", ["loss", "sampling"])
def test_capped_run_tokenizes_only_what_it_reads_and_trains_on_the_same_batches(tiny_model, tmp_path, monkeypatch,
                                                                               weighting):
    lazy, lazy_batches, lazy_texts = _train(tiny_model, tmp_path / "lazy", monkeypatch, up_front=False,
                                            weighting=weighting)
    full, full_batches, full_texts = _train(tiny_model, tmp_path / "full", monkeypatch, up_front=True,
                                            weighting=weighting)
    # the same micro-batches, in the same order, and the same losses
    assert len(lazy_batches) == len(full_batches) == 3 * 2 + 1  # 6 trained on, 1 read ahead
    assert lazy_batches == full_batches
    assert lazy["loss_history"] == full["loss_history"]
    assert lazy["train_loss"] == pytest.approx(full["train_loss"], abs=0.0)
    assert lazy["examples"] == full["examples"] == 64 and lazy["dropped"] == full["dropped"] == 1
    # 3 steps x 4 examples read, plus the micro-batch accelerate's loader reads ahead
    needed = 3 * 4
    assert full["tokenized_rows"] == 64 and full["tokenized_all_because"] == "forced by the test"
    assert needed <= lazy["tokenized_rows"] <= needed + 2
    assert lazy["tokenized_all_because"] == ""
    # tokeniser texts: every prompt (65, they decide which are dropped) + the responses tokenised
    assert full_texts == 65 + 64
    assert lazy_texts == 65 + lazy["tokenized_rows"]


def test_sampler_that_reads_lengths_gets_every_row(tiny_model, tmp_path, monkeypatch):
    metrics, _, texts = _train(tiny_model, tmp_path / "g", monkeypatch, up_front=False, group_by_length=True)
    assert metrics["tokenized_rows"] == metrics["examples"] == 64
    assert metrics["tokenized_all_because"] == "group_by_length reads every example's length"
    assert texts == 65 + 64


def test_read_all_reasons():
    from tapir_trainers.options import TrainOptions
    from tapir_trainers.train_rows import read_all_reason, sampler_reads

    capped = TrainOptions(max_steps=5)
    assert read_all_reason(capped, needed=40, available=1000) is None
    assert read_all_reason(capped, needed=1000, available=1000) == "max_steps reads 1000 rows, the set has 1000"
    assert read_all_reason(TrainOptions(), needed=0, available=1000) == "no max_steps: every epoch reads every row"
    assert "workers" in read_all_reason(TrainOptions(max_steps=5, dataloader_num_workers=2), needed=1, available=9)
    assert sampler_reads(group_by_length=False, packing=True).startswith("packing")
    assert sampler_reads(group_by_length=False, packing=False) is None


def test_rows_read_in_any_order_equal_the_rows_tokenised_at_once(tiny_model):
    from transformers import AutoTokenizer

    from tapir_trainers.collate import encode_examples
    from tapir_trainers.train_rows import TrainRows

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples = _examples(20)
    at_once, dropped = encode_examples(tokenizer, examples, 64)
    rows = TrainRows.of(tokenizer, examples, 64)
    assert rows.dropped == dropped == [5] and len(rows) == len(at_once) == 20
    picked = [7, 3, 19, 3]
    got = rows.many(picked)
    assert rows.tokenized == 3 and rows.tokenizer_calls == 1
    for j, row in zip(picked, got):
        assert (row.input_ids, row.labels, row.weight, row.index, row.truncated) == (
            at_once[j].input_ids, at_once[j].labels, at_once[j].weight, at_once[j].index, at_once[j].truncated)
