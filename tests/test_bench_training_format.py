"""Benchmarks as a tapir-trained student is used: prompts in the format it
was trained in (its chat template, rendered exactly as the trainer renders
its examples), runs and answers keyed by its weights rather than its path,
option conflicts refused before any answer, answers reused across judge
options without loading the model, judge calls tagged with their item."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from tapir import hookimpl  # noqa: E402
from tapir.plugins import registry  # noqa: E402

from fakes import ScriptedBackend  # noqa: E402

DATA = Path(__file__).parent / "data" / "mtbench_small"
ALPACA = Path(__file__).parent / "data" / "alpacaeval_small" / "alpaca_eval_small.json"


def _register_judge(register_plugin, reply=lambda messages: "Rating: [[5]]", name="tf"):
    judge = ScriptedBackend(reply, model_id="scripted-judge")

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scriptedjudge", lambda n, options: judge)

    register_plugin(Plugin(), f"scripted-judge-{name}")
    return judge


def _mtbench(**options):
    base = {"data_dir": str(DATA), "judge_model": "scriptedjudge:judge", "max_new_tokens": 4,
            "model_options": {"batch_size": 16}}
    return registry().get("evaluators", "mtbench").create(options={**base, **options})


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A checkpoint folder written by tapir's hf trainer (one step on the tiny model)."""
    pytest.importorskip("torch")
    from tapir.roles import TrainExample

    out = tmp_path_factory.mktemp("trained") / "round-1"
    examples = [TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}], f"It is {2 * i}.", 1.0)
                for i in range(4)]
    registry().get("trainers", "hf").create(options=dict(
        batch_size=4, micro_batch_size=4, epochs=1, lr=1e-3, seed=0, save_steps=1000)).train(
        str(tiny_model), examples, str(out), keep_checkpoints=False)
    return out


@pytest.fixture
def prompts(monkeypatch):
    """Every prompt the hf backend feeds its model: (messages, token ids)."""
    import tapir_hf.backend as hf

    seen: list[tuple[list[dict], list[int]]] = []
    original = hf.prompt_ids

    def recording(tokenizer, messages, chat_template=True):
        ids = original(tokenizer, messages, chat_template)
        seen.append(([dict(m) for m in messages], list(ids)))
        return ids

    monkeypatch.setattr(hf, "prompt_ids", recording)
    return seen


def _training_prompt_ids(folder: Path, messages: list[dict]) -> list[int]:
    """The prompt tokens the trainer's renderer (collate.encode_examples) makes of ``messages``."""
    from transformers import AutoTokenizer

    from tapir.roles import TrainExample
    from tapir_trainers.collate import IGNORE, encode_examples

    tokenizer = AutoTokenizer.from_pretrained(folder)
    (encoded,), dropped = encode_examples(tokenizer, [TrainExample(messages, "an answer", 1.0)], max_length=4096)
    assert not dropped
    return [t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE]


# -- 1. the training format -------------------------------------------------------------------


def test_auto_rule_and_template_identity(trained, tiny_model, tmp_path):
    from tapir.benchmodel import chat_format, chat_template_text, format_warning, trained_format
    from tapir_mtbench.answers import resolve_format

    text = chat_template_text(trained)
    assert text and "<|im_start|>" in text
    fmt = trained_format(str(trained))
    assert fmt == chat_format(f"hf:{trained}") and fmt.name == "chat_template" and len(fmt.digest) == 12
    # FastChat knows no adapter for "round-1": the checkpoint's chat template, not one_shot
    assert resolve_format(f"hf:{trained}", "auto") == ("chat_template", fmt)
    # a family FastChat knows keeps FastChat's template (its name-based default)
    named = tmp_path / "llama-2-7b-chat-student"
    shutil.copytree(trained, named)
    setting, llama = resolve_format(str(named), "auto")
    assert setting == "auto" and llama.name == "fastchat:llama-2"
    assert "trained with its chat template" in format_warning(str(named), llama)
    # explicit choices win; an API model keeps FastChat's template
    assert resolve_format(str(trained), "one_shot")[1].name == "fastchat:one_shot"
    assert resolve_format("openai/gpt-4-0613", "auto")[1].name == "fastchat:chatgpt"
    assert format_warning(str(trained), fmt) is None
    assert format_warning("openai/gpt-4-0613", resolve_format("openai/gpt-4-0613", "auto")[1]) is None
    # a folder without a chat template: FastChat's fallback, no warning (nothing known)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    assert resolve_format(str(bare), "auto")[1].name == "fastchat:one_shot"


def test_mtbench_turns_are_rendered_as_the_trainer_renders(pm, store, trained, prompts, register_plugin):
    _register_judge(register_plugin)
    rows = _mtbench(categories="writing").run(f"hf:{trained}", store, run_id="fmt1")
    meta = rows[0]["meta"]
    fmt = f"chat_template@{meta['template'].split('@')[1]}"
    assert meta["template"] == fmt and meta["conv_template"] == "chat_template"
    assert meta["template_warning"] is None
    turns = {len(messages): (messages, ids) for messages, ids in prompts}
    assert set(turns) == {1, 3}  # turn one: the question; turn two: question, answer, question
    assert len(prompts) == 4  # two writing questions, two turns
    for messages, ids in prompts:
        assert [m["role"] for m in messages] in (["user"], ["user", "assistant", "user"])
        assert ids == _training_prompt_ids(trained, messages)


def test_mtbench_off_format_run_warns_and_says_so_in_its_rows(pm, store, trained, prompts, register_plugin, capsys):
    _register_judge(register_plugin, name="off")
    rows = _mtbench(categories="writing", conv_template="one_shot", max_new_tokens=2).run(
        f"hf:{trained}", store, run_id="fmt2")
    meta = rows[0]["meta"]
    assert meta["template"].startswith("fastchat:one_shot@") and meta["conv_template"] == "one_shot"
    assert "trained with its chat template" in meta["template_warning"]
    assert "trained with its chat template" in capsys.readouterr().err


def test_alpacaeval_prompt_is_rendered_as_the_trainer_renders(pm, store, trained, prompts):
    pytest.importorskip("alpaca_eval")
    from tapir_testing.openai_server import OpenAIServer

    with OpenAIServer(reply=lambda messages, body: "m") as srv:
        options = {"judge_mode": "robust", "data_path": str(ALPACA), "judge_model": "openai/judge", "limit": 2,
                   "judge_options": {"api_base": srv.base_url, "max_retries": 0}, "max_new_tokens": 2}
        registry().get("evaluators", "alpacaeval").create(options=options).run(f"hf:{trained}", store, run_id="ae")
    assert len(prompts) == 2
    for messages, ids in prompts:
        assert [m["role"] for m in messages] == ["user"]
        assert ids == _training_prompt_ids(trained, messages)


# -- 2. identity by weights --------------------------------------------------------------------------


def test_weights_fingerprint_follows_contents_not_path(trained, tmp_path):
    from tapir.benchmodel import folder_weights_fingerprint, weights_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)  # new mtimes, same bytes
    assert weights_fingerprint(str(copy)) == weights_fingerprint(f"hf:{trained}")
    assert weights_fingerprint("openai/gpt-4-0613") is None
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor
    weights.write_bytes(bytes(data))
    assert folder_weights_fingerprint(copy) != folder_weights_fingerprint(trained)


def test_retrained_folder_reruns_and_a_copy_reuses(pm, store, tiny_model, tmp_path, register_plugin, prompts):
    from tapir.bench import bench_run_id, is_done, run_benchmark
    from tapir_testing.models import build_tiny_model

    judge = _register_judge(register_plugin, name="ident")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    options = {"data_dir": str(DATA), "judge_model": "scriptedjudge:judge", "max_new_tokens": 4,
               "categories": "writing"}
    first = run_benchmark(store, "mtbench", str(ckpt), options)
    assert first[0]["meta"]["answers_generated"] == 4 and len(prompts) == 4 and len(judge.requests) == 4
    assert is_done(store, "mtbench", str(ckpt), options)
    from tapir.compare import build, label_for, to_json, to_table

    template = first[0]["meta"]["template"]
    assert template.startswith("chat_template@")
    assert f"Prompt templates: mtbench {label_for(str(ckpt))} run {first[0]['run_id']}: {template}" in to_table(build(store))
    assert json.loads(to_json(build(store)))["rows"][0]["template"] == template

    # the same weights at another path: a new run for that path, its answers and judgments reused
    moved = tmp_path / "moved"
    shutil.copytree(ckpt, moved)
    again = run_benchmark(store, "mtbench", str(moved), options)
    assert again[0]["run_id"] != first[0]["run_id"] and again[0]["model"] == str(moved.resolve())
    assert again[0]["meta"]["answers_reused"] == 4 and again[0]["meta"]["answers_generated"] == 0
    assert len(prompts) == 4 and len(judge.requests) == 4  # nothing generated, every judge call cached
    assert again[0]["meta"]["weights"] == first[0]["meta"]["weights"]

    # retrained in place (other weights, same path): not done any more, new answers, new judgments
    old_id = bench_run_id("mtbench", str(ckpt), options)
    (ckpt / "model.safetensors").unlink()
    build_tiny_model(ckpt, seed=1)
    assert not is_done(store, "mtbench", str(ckpt), options)
    assert bench_run_id("mtbench", str(ckpt), options) != old_id
    third = run_benchmark(store, "mtbench", str(ckpt), options)
    assert third[0]["meta"]["answers_generated"] == 4 and len(prompts) == 8
    assert third[0]["meta"]["weights"] != first[0]["meta"]["weights"]
    assert third[0]["meta"]["answers_id"] != first[0]["meta"]["answers_id"]


# -- 3. conflicts first, answers reused, no model load, tagged judge calls --------------------------------


def test_judge_args_conflict_exits_2_before_anything(tmp_path, tiny_model):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli

    _add_commands()
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "bench", "run", "mtbench", "--model", f"hf:{tiny_model}",
                                      "-o", f"data_dir={DATA}",
                                      "-o", "judge_args={score_only: true, use_logprobs: true}"])
    assert result.exit_code == 2, result.output
    assert "judge_mode=robust" in result.stderr and "use_logprobs, score_only" in result.stderr
    assert not db.exists()


def test_new_judge_options_reuse_answers_without_loading_the_model(pm, store, register_plugin):
    from tapir.cli.logs_cmd import select_calls

    student = ScriptedBackend(lambda messages: "an answer", model_id="scripted-student")
    judge = ScriptedBackend(lambda messages: "Rating: [[6]]", model_id="scripted-judge")
    loads = {"student": 0, "allowed": True}

    def backend(name, options):
        if name == "judge":
            return judge
        loads["student"] += 1
        if not loads["allowed"]:
            raise AssertionError("the student was loaded although every answer is stored")
        return student

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scripted", backend)

    register_plugin(Plugin(), "scripted-reuse")
    from tapir.bench import run_benchmark

    options = {"data_dir": str(DATA), "judge_model": "scripted:judge", "question_ids": "1,3"}
    first = run_benchmark(store, "mtbench", "scripted:student", options)
    assert loads["student"] == 1 and len(student.requests) == 4 and len(judge.requests) == 4
    loads["allowed"] = False
    robust = run_benchmark(store, "mtbench", "scripted:student",
                           {**options, "judge_mode": "robust", "judge_args": {"params": {"max_new_tokens": 64}}})
    assert robust[0]["run_id"] != first[0]["run_id"]
    assert loads["student"] == 1 and len(student.requests) == 4  # answers reused, the model never loaded
    assert len(judge.requests) == 8  # judged again: other judge settings
    assert robust[0]["meta"]["answers_id"] == first[0]["meta"]["answers_id"]
    assert robust[0]["meta"]["readings"] == {"brackets": 4}
    from tapir.compare import build, render, to_json

    footer = render(build(store), "table", True, full=True)
    assert f"run {robust[0]['run_id']}: brackets 4" in footer and f"run {first[0]['run_id']}: reference 4" in footer
    rows = {r["run_id"]: r for r in json.loads(to_json(build(store)))["rows"]}
    assert rows[robust[0]["run_id"]]["readings"] == {"brackets": 4}

    calls = select_calls(store, role="judge", count=0)
    assert len(calls) == 8
    assert sorted({(c["item_id"], c["round"]) for c in calls}) == [
        ("mtbench-1", 1), ("mtbench-1", 2), ("mtbench-3", 1), ("mtbench-3", 2)]


def test_a_category_without_a_scored_item_is_a_failed_row(pm, store, register_plugin):
    def reply(messages):
        text = messages[-1]["content"]
        return "no idea" if "QMARK3T" in text or "QMARK4T" in text else "[[8]]"  # math never rated

    student = ScriptedBackend(lambda messages: "an answer", model_id="scripted-student")
    judge = ScriptedBackend(reply, model_id="scripted-judge")

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scripted", lambda n, options: student if n == "student" else judge)

    register_plugin(Plugin(), "scripted-failcat")
    rows = {(r["task"], r["metric"]): r for r in _mtbench(judge_model="scripted:judge", model_options={}).run(
        "scripted:student", store, run_id="fc")}
    math = rows[("category/math", "score")]
    assert math["value"] is None and math["n"] == 0
    assert math["meta"]["failed"] is True and math["meta"]["category_failures"] == 4
    writing = rows[("category/writing", "score")]
    assert writing["value"] == 8.0 and writing["meta"]["category_failures"] == 0 and "failed" not in writing["meta"]
    assert ("category/coding", "score") not in rows  # not in this data set: no row
    assert rows[("overall", "score")]["meta"]["subset"].startswith("8 of 80 questions; data_dir question.jsonl")


def test_default_judge_is_a_dated_snapshot():
    from tapir_mtbench.runner import MTBench

    assert MTBench.Options().judge_model == "openai/gpt-4-0613"
