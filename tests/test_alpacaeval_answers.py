"""AlpacaEval's model outputs: a local checkpoint is asked in the format it was
trained on (the prompt its backend renders equals the prompt part of the
trainer's examples for the same messages), the rows say which template, the
outputs are stored under what produces them (reused when only the judge
changes, without loading the model; generated again when the weights
change), and every call carries its role and item."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from tapir.plugins import registry

os.environ.setdefault("OMP_NUM_THREADS", "2")
pytest.importorskip("transformers")
pytest.importorskip("alpaca_eval.main", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore")

INSTRUCTIONS = ["What is 2 plus 2?", "Name a colour.", "Say hello in French."]
SYSTEM = "Answer briefly."


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """(base folder without a chat template, a checkpoint the hf trainer made from it)."""
    from transformers import AutoTokenizer

    from tapir.roles import TrainExample

    root = tmp_path_factory.mktemp("alpaca-answers")
    base = root / "base"
    shutil.copytree(tiny_model, base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = None
    (base / "chat_template.jinja").unlink(missing_ok=True)
    tok.save_pretrained(base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(base).chat_template
    examples = [TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}], f"It is {2 * i}.")
                for i in range(4)]
    out = root / "student"
    registry().get("trainers", "hf").create(options={}).train(
        str(base), examples, str(out), batch_size=4, micro_batch_size=4, epochs=1, lr=1e-3, warmup_ratio=0.0,
        seed=0, save_steps=1000, keep_checkpoints=False)
    return base, out


def _data(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"instruction": q, "output": f"reference {i}", "generator": "ref"}
                                for i, q in enumerate(INSTRUCTIONS)]))
    return path


def _reply(messages, body):
    from tapir_testing.openai_server import token_distribution

    return {"text": "M", "logprobs": token_distribution({"M": 0.7, "m": 0.3})}


def _options(srv, data, **extra):
    return {"data_path": str(data), "judge_model": "openai/judge", "max_new_tokens": 6, "system_prompt": SYSTEM,
            "judge_options": {"api_base": srv.base_url, "concurrency": 4, "max_retries": 0}, **extra}


def _rows(rows):
    return {(r["task"], r["metric"]): r for r in rows}


def trainer_prompt_ids(base, messages) -> list[int]:
    """The prompt tokens the trainer trains on for ``messages``: its encoded
    example's positions whose label is masked."""
    from transformers import AutoTokenizer

    from tapir.roles import TrainExample
    from tapir_trainers.collate import IGNORE, encode_examples

    tokenizer = AutoTokenizer.from_pretrained(base)  # the trainer's tokenizer: the base model's
    [encoded], dropped = encode_examples(tokenizer, [TrainExample(messages, "an answer")], max_length=512)
    assert dropped == []
    masked = next(k for k, label in enumerate(encoded.labels) if label != IGNORE)
    return encoded.input_ids[:masked]


def test_checkpoint_is_asked_in_its_training_format_and_outputs_follow_their_producer(
        pm, store, trained, monkeypatch, tmp_path):
    from tapir_testing.openai_server import OpenAIServer
    from transformers import AutoTokenizer

    import tapir_hf.backend as hf
    from tapir_trainers.collate import DEFAULT_CHAT_TEMPLATE

    base, checkpoint = trained
    model = f"hf:{checkpoint}"
    rendered = {}
    original = hf.HFBackend.prompt_ids

    def spy(self, messages):
        ids = original(self, messages)
        rendered[messages[-1]["content"]] = (messages, ids)
        return ids

    monkeypatch.setattr(hf.HFBackend, "prompt_ids", spy)
    data = _data(tmp_path)
    with OpenAIServer(reply=_reply) as srv:
        evaluator = registry().get("evaluators", "alpacaeval").create(options=_options(srv, data))
        assert evaluator.preflight(model) == []
        first = _rows(evaluator.run(model, store, run_id="r1"))

        # the prompt the checkpoint got is the trainer's, token for token (ChatML: the template
        # the trainer installed, for want of one in the base model, and saved with the checkpoint)
        assert sorted(rendered) == sorted(INSTRUCTIONS)
        for question, (messages, ids) in rendered.items():
            assert messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
            assert ids == trainer_prompt_ids(base, messages)
            text = AutoTokenizer.from_pretrained(checkpoint).decode(ids)
            assert text == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                            f"<|im_start|>assistant\n")
        wr = first[("alpaca_eval", "win_rate")]
        template = f"chat_template@{hashlib.sha256(DEFAULT_CHAT_TEMPLATE.encode()).hexdigest()[:12]}"
        assert all(r["meta"]["template"] == template for r in first.values())
        positions = [p for (p,) in store.execute("select position from judgments where scope = 'r1'")]
        assert wr["n"] == 3 and wr["value"] == pytest.approx(
            100 * sum(0.7 if p == "ab" else 0.3 for p in positions) / 3)  # P(M) is for the output shown second
        produced = wr["meta"]["outputs"]
        assert produced["generated"] == 3 and produced["reused_from_other_runs"] == 0
        assert produced["producer"].startswith(f"hf:{checkpoint}@{hf.folder_fingerprint(checkpoint)}|answers:")

        # every call says who asked and for which item
        calls = store.execute("select role, item_id from llm_calls where run_id = 'r1' order by id").fetchall()
        items = {f"alpaca-{i}" for i in range(3)}
        assert {i for r, i in calls if r == "answer"} == items and {i for r, i in calls if r == "judge"} == items
        assert len(calls) == 6

        # only a judge option changes (another run): the outputs are copied, the model is not loaded
        def no_model(*args, **kwargs):
            raise AssertionError("the model was loaded")

        monkeypatch.setattr(hf, "load_model", no_model)
        other = registry().get("evaluators", "alpacaeval").create(options=_options(srv, data, seed=1))
        second = _rows(other.run(model, store, run_id="r2"))
        produced = second[("alpaca_eval", "win_rate")]["meta"]["outputs"]
        assert produced["generated"] == 0 and produced["reused_from_other_runs"] == 3
        assert second[("generation", "failures")]["value"] == 0
        texts = "select item_id, text from responses where scope = ? and role = 'answer' order by item_id"
        assert store.execute(texts, ["r2"]).fetchall() == store.execute(texts, ["r1"]).fetchall()

        # new weights in the same folder, same run id (a run keyed by the path): generated afresh
        monkeypatch.undo()
        monkeypatch.setattr(hf.HFBackend, "prompt_ids", spy)
        rendered.clear()
        weights = checkpoint / "model.safetensors"
        stat = weights.stat()
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        third = _rows(registry().get("evaluators", "alpacaeval").create(options=_options(srv, data)).run(
            model, store, run_id="r1"))
        produced_again = third[("alpaca_eval", "win_rate")]["meta"]["outputs"]
        assert produced_again["generated"] == 3 and produced_again["from_llm_cache"] == 0
        assert produced_again["producer"] != produced["producer"] and sorted(rendered) == sorted(INSTRUCTIONS)


def test_which_template_a_model_gets(trained):
    from tapir_alpacaeval.answers import answer_template

    base, checkpoint = trained
    assert answer_template(f"hf:{checkpoint}").kind == "chat_template"
    assert answer_template(f"hf:{checkpoint}", {"chat_template": False}).label == "plain"
    assert answer_template(f"hf:{base}").label == "plain"  # no template: the backend joins the texts
    assert answer_template("openai/gpt-4o-mini").label == "endpoint"


def test_preflight_reports_a_model_whose_tokenizer_cannot_be_read(pm, trained, tmp_path):
    """The template is part of the outputs' key: a local model whose tokenizer
    cannot be read is a preflight problem, found before anything is written."""
    base, checkpoint = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    evaluator = registry().get("evaluators", "alpacaeval").create(
        options={"data_path": str(_data(tmp_path)), "judge_options": {"api_base": "http://127.0.0.1:9/v1"}})
    problems = evaluator.preflight(f"hf:{broken}")
    assert len(problems) == 1 and problems[0].startswith(f"alpacaeval: the tokenizer of 'hf:{broken}' could not")
    assert evaluator.preflight(f"hf:{checkpoint}") == []
