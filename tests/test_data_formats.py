"""Data as the field has it: ShareGPT / OpenHermes conversations, OpenAI
messages with system turns, Alpaca; data.sample draws a seeded subset."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tapir.config import DataConfig
from tapir.errors import ConfigError
from tapir.pipeline.data import load_items, sample_items
from tapir.roles import Item


def _write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


OPENHERMES_ROW = {
    "conversations": [
        {"from": "system", "value": "You are an AI assistant. Think step by step.", "weight": None},
        {"from": "human", "value": "What is 12*12?", "weight": None},
        {"from": "gpt", "value": "12*12 = 144.", "weight": 1.0},
        {"from": "human", "value": "And 13*13?", "weight": None},
        {"from": "gpt", "value": "169.", "weight": 1.0},
    ],
    "source": "airoboros2.2", "category": "orca",
}


def test_sharegpt_conversations_with_a_system_turn(tmp_path):
    path = _write(tmp_path, [OPENHERMES_ROW, {"conversations": [{"from": "human", "value": "Name a prime."},
                                                                 {"from": "gpt", "value": "7"}]}])
    report = load_items(DataConfig(path=str(path)), tmp_path)
    first, second = report.items
    assert (first.instruction, first.output) == ("What is 12*12?", "12*12 = 144.")
    assert first.meta == {"system": "You are an AI assistant. Think step by step."}
    assert first.messages == [{"role": "system", "content": "You are an AI assistant. Think step by step."},
                              {"role": "user", "content": "What is 12*12?"}]
    assert (second.instruction, second.output, second.meta) == ("Name a prime.", "7", {})
    assert second.messages == [{"role": "user", "content": "Name a prime."}]


def test_openai_messages_with_a_system_turn(tmp_path):
    path = _write(tmp_path, [{"messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Capital of France?"},
                                           {"role": "assistant", "content": "Paris."}]}])
    (item,) = load_items(DataConfig(path=str(path)), tmp_path).items
    assert (item.instruction, item.output, item.meta["system"]) == ("Capital of France?", "Paris.", "Be brief.")


def test_alpaca_row_with_a_system_column(tmp_path):
    path = _write(tmp_path, [{"instruction": "Say hi.", "output": "Hi.", "system": "You are polite."},
                             {"instruction": "Say bye.", "output": "Bye."}])
    a, b = load_items(DataConfig(path=str(path)), tmp_path).items
    assert a.meta == {"system": "You are polite."} and b.meta == {}


def test_sharegpt_bad_rows_name_line_and_reason(tmp_path):
    path = _write(tmp_path, [
        {"conversations": [{"from": "narrator", "value": "Once upon a time"}]},
        {"conversations": [{"from": "gpt", "value": "an answer with no question"}]},
        {"conversations": [{"role": "user", "content": "wrong keys"}]},
        {"conversations": "not a list"},
        {"conversations": [{"from": "human", "value": "   "}]},
    ])
    with pytest.raises(ConfigError) as err:
        load_items(DataConfig(path=str(path)), tmp_path)
    text = str(err.value)
    assert "line 1: 'conversations'[0] is from 'narrator', a speaker tapir does not know" in text
    assert "line 2: 'conversations' has no user turn (roles: assistant)" in text
    assert "line 3: 'conversations'[0] has no 'from' or 'value'" in text
    assert "line 4: 'conversations' is text, not a list of {from, value} turns" in text
    assert "line 5: 'conversations[0].value' is only whitespace (the first user turn)" in text


def test_teacher_sends_the_items_system_prompt():
    from tapir_teachers.teacher import Teacher

    teacher = Teacher(object(), Teacher.Options(system_prompt="configured"))
    with_system = Item("a", "Q?", meta={"system": "from the data"})
    plain = Item("b", "Q?")
    assert teacher.messages(with_system) == [{"role": "system", "content": "from the data"},
                                             {"role": "user", "content": "Q?"}]
    assert teacher.messages(plain) == [{"role": "system", "content": "configured"},
                                       {"role": "user", "content": "Q?"}]


def _items(n_per_task: dict[str, int]) -> list[Item]:
    return [Item(f"{t}-{i}", f"{t} question {i}", task_type=t) for t, n in n_per_task.items() for i in range(n)]


def test_sample_is_seeded_ordered_and_stratified():
    items = _items({"Math": 60, "Code Generation": 30, "Writing": 10})
    drawn = sample_items(items, 20, seed=0)
    assert len(drawn) == 20
    assert drawn == sample_items(items, 20, seed=0)  # same seed, same subset
    assert [it.id for it in drawn] != [it.id for it in sample_items(items, 20, seed=1)]
    assert Counter(it.task_type for it in drawn) == {"Math": 12, "Code Generation": 6, "Writing": 2}
    positions = [items.index(it) for it in drawn]
    assert positions == sorted(positions)  # the file's order is kept
    assert drawn != items[:20]  # not the first N


def test_sample_without_labels_and_larger_than_the_data():
    items = [Item(f"i{k}", f"q{k}") for k in range(50)]
    drawn = sample_items(items, 10, seed=3)
    assert len({it.id for it in drawn}) == 10 and drawn != items[:10]
    assert sample_items(items, 80, seed=3) == items


def test_data_sample_through_load_items(tmp_path):
    rows = [{"instruction": f"question {k}", "output": f"answer {k}"} for k in range(40)]
    path = _write(tmp_path, rows)
    report = load_items(DataConfig(path=str(path), sample=5), tmp_path, seed=7)
    assert len(report.items) == 5 and report.sampled_from == 40
    again = load_items(DataConfig(path=str(path), sample=5), tmp_path, seed=7)
    assert [it.id for it in again.items] == [it.id for it in report.items]
    assert [it.instruction for it in report.items] != [f"question {k}" for k in range(5)]


def test_data_sample_must_be_positive():
    with pytest.raises(ValueError):
        DataConfig(path="x.jsonl", sample=0)
