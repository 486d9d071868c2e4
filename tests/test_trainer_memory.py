"""Issue 20 item 7 (peak memory): the ``hf`` trainer's rows are the same as
tokenising every example on its own, but compact (``array('i')`` ids, the
labels from the prompt length), identical examples share their ids and are
rendered and tokenised once, the tokeniser sees a chunk of texts per call,
and the garbage collector skips the set-up's objects while training."""

from __future__ import annotations

import gc
import os
from array import array

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapir.roles import TrainExample  # noqa: E402

IGNORE = -100


def _examples() -> list[TrainExample]:
    """Distinct and repeated pairs (as task up-sampling makes), a system
    prompt, a multi-turn prompt, a response cut at max_length, a prompt too
    long to keep, and a prompt whose content cannot be a key (a list)."""
    out = []
    for i in range(12):
        out.append(TrainExample([{"role": "user", "content": f"Question {i % 5}: explain."}],
                                f"Answer {i % 3}: " + "step " * (i % 4), 1.0 + i % 2))
    out.append(TrainExample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                            "Hello.", 0.5))
    out.append(TrainExample([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                             {"role": "user", "content": "More?"}], "No more.", 1.0))
    out.append(TrainExample([{"role": "user", "content": "Long one."}], "word " * 80, 1.0))
    out.append(TrainExample([{"role": "user", "content": "word " * 200}], "dropped", 1.0))
    out.append(TrainExample([{"role": "user", "content": "Question 0: explain."}], "Answer 0: ", 3.0))
    return out


def _reference_rows(tokenizer, examples, max_length):
    """Each example rendered and tokenised on its own, ids and labels as
    lists of ints: the rows as the trainer built them before this change."""
    from tapir_trainers.collate import end_of_turn_ids, ensure_chat_template

    ensure_chat_template(tokenizer)
    stops, eos = end_of_turn_ids(tokenizer), tokenizer.eos_token_id
    rows, dropped = [], []
    for i, ex in enumerate(examples):
        prompt = tokenizer.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(p_ids) >= max_length:
            dropped.append(i)
            continue
        full = tokenizer.apply_chat_template(ex.prompt + [{"role": "assistant", "content": ex.response}],
                                             tokenize=False)
        r_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        cut = next((k for k, t in enumerate(r_ids) if t in stops), None)
        r_ids = r_ids[:cut + 1] if cut is not None else r_ids + [eos]
        ids, labels = p_ids + r_ids, [IGNORE] * len(p_ids) + r_ids
        rows.append((ids[:max_length], labels[:max_length], float(ex.weight), i, len(ids) > max_length))
    return rows, dropped


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_rows_are_those_of_each_example_tokenised_alone(tokenizer, monkeypatch):
    from tapir_trainers import collate
    from tapir_trainers.train_rows import TrainRows

    monkeypatch.setattr(collate, "CHUNK", 4)  # several chunks per pass
    examples = _examples()
    expected, dropped = _reference_rows(tokenizer, examples, 48)
    rows = TrainRows.of(tokenizer, examples, 48)
    got = [(r.input_ids, r.labels, r.weight, r.index, r.truncated) for r in rows.tokenize_all()]
    assert got == expected
    assert rows.dropped == dropped == [15]
    assert any(r[4] for r in expected)  # the set has a truncated row
    # the trainer's own entry point gives the same rows
    encoded, dropped_again = collate.encode_examples(tokenizer, examples, 48)
    assert [(r.input_ids, r.labels, r.weight, r.index, r.truncated) for r in encoded] == expected
    assert dropped_again == dropped


def test_rows_are_compact_and_repeated_examples_share_them(tokenizer):
    from tapir_trainers.train_rows import TrainRows

    examples = _examples()
    rows = list(TrainRows.of(tokenizer, examples, 48).tokenize_all())
    by_index = {r.index: r for r in rows}
    assert all(isinstance(r.ids, array) and r.ids.itemsize == 4 for r in rows)
    # examples 0, 15 and 16... : 0 and 16 have the same prompt and response, 0 and 15 do not
    assert by_index[0].ids is by_index[16].ids and by_index[0].weight == 1.0 and by_index[16].weight == 3.0
    assert by_index[0].ids is not by_index[5].ids  # same prompt, other response
    assert examples[0].prompt == examples[5].prompt and examples[0].response != examples[5].response
    distinct = {id(r.ids) for r in rows}
    assert len(distinct) == len({(str(e.prompt), e.response) for i, e in enumerate(examples) if i != 15})


def test_prompts_and_pairs_are_rendered_once_in_chunks(tokenizer, monkeypatch):
    from tapir_trainers import collate
    from tapir_trainers.train_rows import TrainRows

    monkeypatch.setattr(collate, "CHUNK", 4)
    rendered: list[int] = []
    tokenised: list[int] = []
    render, ids = collate._render, collate._ids

    def counting_render(tok, conversations, add_generation_prompt):
        rendered.append(len(conversations))
        return render(tok, conversations, add_generation_prompt)

    real_call = type(tokenizer).__call__

    def counting_call(self, texts, *a, **k):
        tokenised.append(len(texts))
        return real_call(self, texts, *a, **k)

    monkeypatch.setattr(collate, "_render", counting_render)
    monkeypatch.setattr(type(tokenizer), "__call__", counting_call)
    examples = _examples()
    TrainRows.of(tokenizer, examples, 48).tokenize_all()
    prompts = {str(e.prompt) for e in examples}
    pairs = {(str(e.prompt), e.response) for i, e in enumerate(examples) if i != 15}
    assert rendered[0] == len(prompts) and sum(rendered[1:]) == len(pairs)  # each once
    assert sum(tokenised) == len(prompts) + len(pairs) and max(tokenised) == 4


def test_collators_take_compact_rows(tokenizer):
    import torch

    from tapir_trainers.collate import PackCollator, PadCollator, TrainDataset
    from tapir_trainers.train_rows import TrainRows

    examples = _examples()
    rows = TrainRows.of(tokenizer, examples, 48).tokenize_all()
    data = TrainDataset(rows)
    features = data.__getitems__([0, 1, 2])
    as_lists = [{"input_ids": r.input_ids, "labels": r.labels, "weight": r.weight} for r in rows.many([0, 1, 2])]
    for collator in (PadCollator(tokenizer.pad_token_id or 0), PackCollator(tokenizer.pad_token_id or 0, 64)):
        a, b = collator(features), collator(as_lists)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # packing sets each example's first label to -100 on its own copy: the shared ids stay whole
    assert rows[0].labels == _reference_rows(tokenizer, examples, 48)[0][0][1]


def test_training_runs_with_the_set_up_frozen_out_of_gc(tiny_model, tmp_path):
    from transformers import TrainerCallback

    from tapir.plugins import registry

    seen: list[int] = []

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(gc.get_freeze_count())

    trainer = registry().get("trainers", "hf").create(
        options=dict(batch_size=4, micro_batch_size=2, max_steps=2, lr=1e-3, seed=0, max_length=48))
    before = gc.get_freeze_count()
    metrics = trainer.train(str(tiny_model), _examples(), str(tmp_path / "out"), callbacks=[Probe()])
    assert metrics["steps"] == 2 and len(seen) == 2
    assert all(n > 10_000 for n in seen)  # the heap so far is frozen: gc.collect() does not walk it
    assert gc.get_freeze_count() == before  # and thawed again after training


def test_an_up_sampled_items_examples_share_its_messages():
    from tapir.pipeline.stages.train import weighted_examples
    from tapir.roles import Item

    a = Item(id="a", instruction="Explain tides.", output="The moon.", meta={"system": "Be brief."})
    b = Item(id="b", instruction="Sum 2 and 2.", output="4")
    examples = weighted_examples([a, a, b, a], [b], 0.7)
    assert [(e.prompt, e.response) for e in examples] == [(a.messages, "The moon."), (a.messages, "The moon."),
                                                          (b.messages, "4"), (a.messages, "The moon."),
                                                          (b.messages, "4")]
    assert examples[0].prompt is examples[1].prompt is examples[3].prompt  # one list, not one per repeat
    assert examples[2].prompt is examples[4].prompt
    assert [e.weight for e in examples] == [0.7] * 4 + [pytest.approx(0.3)]
