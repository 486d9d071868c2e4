"""Task-type classifiers: the seed set, splits, centroid, encoder, LLM parsing, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tapir.tasks import TASK_TYPES
from tests.fakes import ScriptedBackend
from tapir.roles import Completion

from tapir_classifiers.labelled import (
    Example,
    evaluate,
    kfold,
    load_labelled,
    stratified_split,
)

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_instructions.jsonl"


def _subset(examples, labels, per_label):
    out, seen = [], Counter()
    for ex in examples:
        if ex.label in labels and seen[ex.label] < per_label:
            out.append(ex)
            seen[ex.label] += 1
    return out


def _write(path: Path, examples) -> Path:
    path.write_text(
        "".join(json.dumps({"id": e.id, "instruction": e.instruction, "input": e.input, "task_type": e.label}) + "\n"
                for e in examples),
        encoding="utf-8",
    )
    return path


# --- the seed set -----------------------------------------------------------


def test_seed_set_covers_every_task_type():
    rows = [json.loads(line) for line in SEED.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 8 * len(TASK_TYPES)
    counts = Counter(r["task_type"] for r in rows)
    assert set(counts) == set(TASK_TYPES)
    assert min(counts.values()) >= 8
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    instructions = [" ".join(r["instruction"].lower().split()) for r in rows]
    assert len(set(instructions)) == len(instructions)
    for r in rows:
        assert set(r) == {"id", "instruction", "input", "task_type"}
        assert r["instruction"].strip() and isinstance(r["input"], str)
    # Code Debug items carry the code to debug.
    assert all(r["input"] for r in rows if r["task_type"] == "Code Debug")


def test_load_labelled_normalises_labels_and_reports_bad_lines(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"instruction": "hi", "label": "code generation"}\n\n'
                    '{"instruction": "x", "task_type": "common sense", "input": "y"}\n')
    exs = load_labelled(good)
    assert [e.label for e in exs] == ["Code Generation", "Common-Sense"]
    assert exs[1].text == "x\n\ny"
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"instruction": "hi", "task_type": "Math"}\n{"instruction": "yo", "task_type": "Cooking"}\n')
    from tapir.errors import TapirError

    with pytest.raises(TapirError, match=r"b.jsonl:2: unknown task type 'Cooking'"):
        load_labelled(bad)


def test_stratified_split_and_kfold():
    examples = load_labelled(SEED)
    train, test = stratified_split(examples, 0.2, seed=0)
    assert len(test) == 2 * len(TASK_TYPES) and len(train) + len(test) == len(examples)
    assert Counter(e.label for e in test) == Counter({t: 2 for t in TASK_TYPES})
    assert not {e.id for e in train} & {e.id for e in test}
    assert stratified_split(examples, 0.2, seed=0) == (train, test)  # deterministic
    folds = kfold(examples, 5, seed=0)
    held = [e.id for _, test in folds for e in test]
    assert sorted(held) == sorted(e.id for e in examples)
    assert all(len(test) == 64 for _, test in folds)


def test_evaluate_counts_per_label():
    class Always:
        labels = TASK_TYPES

        def classify(self, texts):
            return [("Math", 1.0) for _ in texts]

    exs = [Example("1", "a", "", "Math"), Example("2", "b", "", "Math"), Example("3", "c", "", "Law")]
    r = evaluate(Always(), exs)
    assert r["accuracy"] == pytest.approx(2 / 3) and r["n"] == 3
    assert r["per_label"]["Math"] == {"n": 2, "correct": 2, "accuracy": 1.0}
    assert r["per_label"]["Law"]["accuracy"] == 0.0
    assert r["confusions"] == [["Law", "Math", 1]]


# --- LLM classifier parsing ---------------------------------------------------


def _llm(reply, **options):
    from tapir_classifiers.llm import LLMClassifier

    backend = ScriptedBackend(reply)
    return LLMClassifier(backend, LLMClassifier.Options(**{"prompt": "label", **options})), backend


def test_llm_prompt_lists_every_type_and_batches():
    clf, backend = _llm(lambda m: "Math")
    assert clf.classify(["What is 2+2?", "Solve x+1=3"]) == [("Math", 1.0), ("Math", 1.0)]
    assert len(backend.requests) == 2
    prompt = backend.requests[0].messages[0]["content"]
    assert all(t in prompt for t in TASK_TYPES) and "What is 2+2?" in prompt
    assert backend.requests[0].params.temperature == 0.0
    assert clf.stats["exact"] == 2 and clf.fallbacks == 0
    assert list(clf.labels) == list(TASK_TYPES)


@pytest.mark.parametrize(
    "answer,label,conf",
    [
        ("Code Debug", "Code Debug", 1.0),
        ("code debug", "Code Debug", 0.8),
        ("**Common Sense**", "Common-Sense", 0.8),
        ("Task type: Complex-Format.", "Complex Format", 0.8),
        ("The task type is Roleplay because the user asks to act.", "Roleplay", 0.8),
        ("roleplay\nExplanation: ...", "Roleplay", 0.8),
        ("Translation", "Multilingual", 0.8),
        ("Sports", "Sport", 0.8),
        ("Economics", "Economy", 0.8),
        ("Philosphy", "Philosophy", 0.5),  # misspelt: closest match by difflib
        ("Chemestry", "Chemistry", 0.5),
    ],
)
def test_llm_lenient_parsing(answer, label, conf):
    clf, _ = _llm(lambda m: answer)
    assert clf.classify(["x"]) == [(label, conf)]
    assert clf.stats["retried"] == 0


def test_llm_nudge_retry_then_fallback_counted():
    def reply(messages):
        text = messages[0]["content"]
        if len(messages) == 1:
            return "I am not sure what you mean." if "hard" in text else "Physics"
        assert messages[1]["role"] == "assistant" and "Reply with exactly one" in messages[2]["content"]
        return "History" if "second" in text else "banana"

    clf, backend = _llm(reply)
    out = clf.classify(["easy one", "hard second", "hard third"])
    assert out == [("Physics", 1.0), ("History", 0.8), ("Others", 0.0)]
    assert len(backend.requests) == 5  # 3 first asks + 2 nudges
    assert clf.stats["retried"] == 2 and clf.stats["fallback"] == 1 and clf.fallbacks == 1
    assert clf.raw[2] == ["I am not sure what you mean.", "banana"]


@pytest.mark.parametrize("answer", ['The task type is "Math, Code Generation, Writing', "15% of 240 is 36.", ""])
def test_llm_ambiguous_or_off_topic_answers_do_not_parse(answer):
    # A weak model that echoes the list (several types named) or just answers
    # the instruction must not be read as the first type it happens to name.
    clf, backend = _llm(lambda m: answer)
    assert clf.classify(["What is 15% of 240?"]) == [("Others", 0.0)]
    assert clf.stats["retried"] == 1 and clf.fallbacks == 1 and len(backend.requests) == 2


def test_llm_calls_carry_role_and_item_also_on_the_nudge():
    clf, backend = _llm(lambda m: "Physics" if len(m) == 1 and "easy" in m[0]["content"] else "banana")
    clf.classify(["easy one", "hard one"], item_ids=["i-easy", "i-hard"])
    assert [r.meta for r in backend.requests] == [
        {"role": "classifier", "item_id": "i-easy"}, {"role": "classifier", "item_id": "i-hard"},
        {"role": "classifier", "item_id": "i-hard"}]  # the nudge is the same item's call
    with pytest.raises(ValueError, match="2 item ids for 1 texts"):
        clf.classify(["x"], item_ids=["a", "b"])


def test_llm_backend_errors_fall_back():
    clf, _ = _llm(lambda m: Completion(error="boom"))
    assert clf.classify(["a"]) == [("Others", 0.0)]
    assert clf.stats["errors"] == 2 and clf.fallbacks == 1


def test_llm_few_shot_turns():
    from tapir_classifiers.llm import LLMClassifier

    exs = [Example("1", "What is 2+2?", "", "Math"), Example("2", "Add 3 and 4", "", "Math"),
           Example("3", "Fix it", "x = = 1", "Code Debug")]
    backend = ScriptedBackend(lambda m: "Code Debug")
    clf = LLMClassifier(backend, LLMClassifier.Options(prompt="label", few_shot=2, examples=exs))
    assert clf.classify(["Why does this fail?"]) == [("Code Debug", 1.0)]
    msgs = backend.requests[0].messages
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert "What is 2+2?" in msgs[0]["content"] and msgs[1]["content"] == "Math"
    assert "Fix it\n\nx = = 1" in msgs[2]["content"] and msgs[3]["content"] == "Code Debug"
    assert "Why does this fail?" in msgs[4]["content"]


def test_llm_needs_a_backend():
    from tapir.errors import TapirError
    from tapir_classifiers.llm import LLMClassifier

    with pytest.raises(TapirError, match="needs a model"):
        LLMClassifier(None, LLMClassifier.Options())


# --- the paper's classification prompt (Table 6) ----------------------------------


def test_table6_prompt_is_the_default_and_asks_for_the_reason_first():
    from tapir.plugins import registry

    backend = ScriptedBackend(lambda m: "The user asks to compute a percentage, which is arithmetic.\nTask type: Math")
    clf = registry().get("classifiers", "llm").create(backend, options={})
    assert clf.classify(["What is 15% of 240?"]) == [("Math", 1.0)]
    system, user = backend.requests[0].messages
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    text = user["content"]
    assert text.index("explain your reasoning") < text.index("then classify")
    assert "task type or domain" in text
    # the list as the table prints it, every type in order, then the markers
    assert "['Math', 'Code Generation', 'Writing'," in text and "'Paraphrase', 'Others']" in text
    assert all(repr(t) in text for t in TASK_TYPES)
    assert text.index("#Given Instruction#:\nWhat is 15% of 240?") < text.index("#Task Classification#:")
    assert text.rstrip().endswith("#Task Classification#:")
    params = backend.requests[0].params
    assert params.max_new_tokens == 256 and params.temperature == 0.0


@pytest.mark.parametrize(
    "reply,label,conf",
    [
        ("It asks to fix a bug in a loop, not to write new code.\nTask type: Code Debug", "Code Debug", 1.0),
        ("#Task Classification#: Code Debug", "Code Debug", 1.0),
        ("Reason: the user wants a story.\n**Task type:** writing", "Writing", 0.8),
        # reason first: the reply ends with the label, though the reason named another type
        ("This looks like Math at first, but it is really about logical deduction.\nReasoning", "Reasoning", 1.0),
        ("The instruction asks to translate a sentence into French, so it is Multilingual.", "Multilingual", 0.8),
        ("It is not Math; it is about Physics.\nThe answer involves forces.", "Physics", 0.8),
        ("Classification: Common Sense\n\nBecause everyday knowledge suffices.", "Common-Sense", 0.8),
    ],
)
def test_table6_reply_parsing(reply, label, conf):
    clf, backend = _llm(lambda m: reply, prompt="table6")
    assert clf.classify(["x"]) == [(label, conf)]
    assert len(backend.requests) == 1


def test_table6_reply_that_echoes_the_list_is_nudged():
    echo = "The list is: " + ", ".join(TASK_TYPES)

    def reply(messages):
        if len(messages) == 2:
            return echo
        assert "Task type: <name>" in messages[-1]["content"]
        return "Because it is about prices.\nTask type: Economy"

    clf, backend = _llm(reply, prompt="table6")
    assert clf.classify(["How do interest rates affect inflation?"]) == [("Economy", 0.8)]
    assert clf.stats["retried"] == 1 and len(backend.requests) == 2


def test_llm_options_are_declared_and_checked():
    from tapir.errors import ConfigError
    from tapir.plugins import registry

    component = registry().get("classifiers", "llm")
    backend = ScriptedBackend(lambda m: "Law")
    clf = component.create(backend, options={"prompt": "label", "params": {"max_new_tokens": 4}})
    assert clf.params.max_new_tokens == 4 and clf.classify(["Is a verbal contract binding?"]) == [("Law", 1.0)]
    for bad, match in [({"max_new_tokens": 16}, "unknown option 'max_new_tokens'"),
                       ({"prompt": "table7"}, "prompt"), ({"params": {"top_k": 3}}, "top_k")]:
        with pytest.raises(ConfigError, match=match):
            component.create(backend, options=bad)
    assert "model_dir" in registry().get("classifiers", "encoder").options_model().model_fields
    assert "model_dir" not in component.options_model().model_fields


def test_registered_classifiers(pm):
    from tapir.plugins import registry

    assert {"llm", "encoder", "centroid"} <= set(registry().names("classifiers"))
    clf = registry().get("classifiers", "llm").create(ScriptedBackend(lambda m: "Law"), options={})
    assert clf.classify(["Is a verbal contract binding?"]) == [("Law", 1.0)]


# --- embedding classifiers (MiniLM) ----------------------------------------------

# Measured: centroid held-out accuracy 0.781 on the 80/20 split (seed 0), 0.746 in
# 5-fold CV; chance is 1/32 = 0.031.
CENTROID_HELDOUT = 0.78


def test_centroid_beats_chance_on_heldout():
    from tapir.plugins import registry

    train, test = stratified_split(load_labelled(SEED), 0.2, seed=0)
    clf = registry().get("classifiers", "centroid").create(None, options={"examples": train})
    assert list(clf.labels) == list(TASK_TYPES)
    result = evaluate(clf, test)
    assert result["n"] == 64
    assert result["accuracy"] >= CENTROID_HELDOUT - 0.05
    preds = clf.classify(["Translate 'good night' into German.", "Fix this bug:\n\nfor i in range(10) print(i)"])
    assert [p[0] for p in preds] == ["Multilingual", "Code Debug"]
    assert all(0.0 < p[1] <= 1.0 for p in preds)


def test_centroid_reads_labels_path(tmp_path):
    from tapir_classifiers.centroid import CentroidClassifier

    exs = _subset(load_labelled(SEED), {"Math", "Music"}, 4)
    clf = CentroidClassifier(None, CentroidClassifier.Options(labels_path=str(_write(tmp_path / "l.jsonl", exs))))
    assert clf.labels == ["Math", "Music"]
    assert clf.classify([]) == []
    assert clf.classify(["Who composed this symphony?"])[0][0] == "Music"


def test_centroids_are_read_back_for_the_same_examples_and_weights(tmp_path, monkeypatch):
    """Fitting embeds every labelled example; the same examples with the same
    encoder weights read the centroids from the cache (no embedding), and a
    changed label, changed weights or a damaged file compute them again."""
    import os
    import shutil

    import numpy as np
    import tapir_hf.encoder as enc
    from tapir_classifiers.centroid import CentroidClassifier

    monkeypatch.setenv("TAPIR_CACHE_DIR", str(tmp_path / "cache"))
    embedded = []
    real_embed = enc.embed

    def counting_embed(texts, *args, **kwargs):
        embedded.append(len(texts))
        return real_embed(texts, *args, **kwargs)

    monkeypatch.setattr(enc, "embed", counting_embed)
    exs = _subset(load_labelled(SEED), {"Math", "Music", "Code Debug"}, 5)
    first = CentroidClassifier(None, CentroidClassifier.Options(examples=exs))
    assert embedded == [15]
    files = list((tmp_path / "cache" / "centroids").glob("*.npz"))
    assert len(files) == 1

    again = CentroidClassifier(None, CentroidClassifier.Options(examples=exs))
    assert embedded == [15]  # read back: nothing embedded
    assert again.labels == first.labels and set(first.labels) == {"Math", "Music", "Code Debug"}
    assert np.array_equal(again.centroids, first.centroids)
    texts = ["Who composed this symphony?", "What is 17 * 23?"]
    assert again.classify(texts) == first.classify(texts)
    del embedded[1:]  # the two classify calls embedded their own texts

    other = "Music" if exs[-1].label != "Music" else "Math"
    relabelled = [*exs[:-1], Example(exs[-1].id, exs[-1].instruction, exs[-1].input, other)]
    CentroidClassifier(None, CentroidClassifier.Options(examples=relabelled))
    assert embedded == [15, 15]

    files[0].write_bytes(b"not a numpy file")
    repaired = CentroidClassifier(None, CentroidClassifier.Options(examples=exs))
    assert embedded == [15, 15, 15] and np.array_equal(repaired.centroids, first.centroids)

    # The same weights elsewhere (a copy keeps names, sizes and times): read back, as the path does not matter.
    folder = tmp_path / "encoder"
    shutil.copytree(enc.encoder_path("minilm"), folder)
    CentroidClassifier(None, CentroidClassifier.Options(examples=exs, encoder=str(folder)))
    assert embedded == [15, 15, 15]
    # Weights written again (another modification time): computed again.
    weights = next(p for p in folder.rglob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    CentroidClassifier(None, CentroidClassifier.Options(examples=exs, encoder=str(folder)))
    assert embedded == [15, 15, 15, 15]

    # A hub id is not a folder: never cached.
    assert enc.encoder_fingerprint("org/some-encoder") is None


def test_encoder_trains_saves_and_reloads(tmp_path):
    from tapir_classifiers.encoder import META_FILE, EncoderClassifier

    labels = ["Math", "Code Debug", "Multilingual", "History"]
    exs = _subset(load_labelled(SEED), set(labels), 5)
    path = _write(tmp_path / "small.jsonl", exs)
    model_dir = tmp_path / "clf"
    clf = EncoderClassifier(None, EncoderClassifier.Options(model_dir=str(model_dir), labels_path=str(path), epochs=1,
                                                            holdout=0.2, seed=0, batch_size=8, max_length=48))
    meta = json.loads((model_dir / META_FILE).read_text())
    assert meta["labels"] == labels  # TASK_TYPES order
    assert meta["n_train"] == 16 and meta["n_heldout"] == 4 and meta["base"] == "minilm"
    assert 0.0 <= meta["accuracy"] <= 1.0 and len(meta["train_loss"]) == 1
    texts = [e.text for e in exs[:6]] + ["Translate 'cat' into French."]
    first = clf.classify(texts)
    assert all(lab in labels and 0.0 < conf <= 1.0 for lab, conf in first)
    # Reload from the folder alone: same labels, identical predictions.
    again = EncoderClassifier(None, EncoderClassifier.Options(model_dir=str(model_dir)))
    assert again.labels == labels
    second = again.classify(texts)
    assert [p[0] for p in second] == [p[0] for p in first]
    assert [p[1] for p in second] == pytest.approx([p[1] for p in first], abs=1e-5)


def test_encoder_without_model_dir_trains_once_into_the_cache(tmp_path, monkeypatch):
    from tapir_classifiers import encoder

    monkeypatch.setenv("TAPIR_CACHE_DIR", str(tmp_path / "cache"))
    exs = _subset(load_labelled(SEED), {"Law", "Art"}, 4)
    path = _write(tmp_path / "l.jsonl", exs)
    opts = encoder.EncoderClassifier.Options(labels_path=str(path), epochs=1, max_length=32)
    first = encoder.EncoderClassifier(None, opts)
    assert first.model_dir.parent == tmp_path / "cache" / "classifiers"
    assert first.labels == ["Law", "Art"] and first.meta["n_heldout"] == 2

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(encoder, "train_encoder", no_training)
    again = encoder.EncoderClassifier(None, opts)
    assert again.model_dir == first.model_dir
    assert [p.name for p in first.model_dir.parent.iterdir()] == [first.model_dir.name]


# --- CLI ---------------------------------------------------------------------


@pytest.fixture
def runner(pm):
    from click.testing import CliRunner

    from tapir.cli import _add_commands

    _add_commands()
    return CliRunner()


def test_cli_train_stores_accuracy(runner, tmp_path):
    from tapir.cli import cli
    from tapir.store import open_store

    exs = _subset(load_labelled(SEED), {"Math", "Grammar", "Sport"}, 5)
    labels = _write(tmp_path / "small.jsonl", exs)
    db = tmp_path / "t.db"
    out = tmp_path / "enc"
    result = runner.invoke(cli, ["--db", str(db), "classifier", "train", "--labels", str(labels), "--out", str(out),
                                 "--epochs", "1", "--holdout", "0.2", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy:" in result.output
    rows = list(open_store(db)["benchmark_results"].rows)
    assert len(rows) == 1
    row = rows[0]
    assert (row["benchmark"], row["model"], row["task"], row["metric"]) == ("classifier", str(out), "task-type",
                                                                            "accuracy")
    assert row["n"] == 3 and 0.0 <= row["value"] <= 1.0
    meta = json.loads(row["meta"])
    assert meta["base"] == "minilm" and meta["seed"] == 0
    assert sum(v["n"] for v in meta["per_label"].values()) == 3
    assert json.loads((out / "tapir_classifier.json").read_text())["accuracy"] == pytest.approx(row["value"])

    # eval on the same split loads the trained folder and reproduces its accuracy.
    result = runner.invoke(cli, ["--db", str(db), "classifier", "eval", "--labels", str(labels), "--name", "encoder",
                                 "-o", f"model_dir={out}", "--no-store"])
    assert result.exit_code == 0, result.output
    assert f"encoder: accuracy {row['value']:.3f} (n=3" in result.output and "warning" not in result.output

    # without a model folder, eval trains a throw-away encoder on the training split.
    result = runner.invoke(cli, ["--db", str(db), "classifier", "eval", "--labels", str(labels), "--name", "encoder",
                                 "-o", "epochs=1", "-o", "max_length=32", "--no-store"])
    assert result.exit_code == 0, result.output
    assert "encoder: accuracy" in result.output and "n=3," in result.output


def test_cli_eval_centroid_and_llm(runner, tmp_path, monkeypatch):
    from tapir.cli import cli
    from tapir.store import open_store

    exs = _subset(load_labelled(SEED), {"Math", "Music", "Law", "Art"}, 5)
    labels = _write(tmp_path / "small.jsonl", exs)
    db = tmp_path / "t.db"
    result = runner.invoke(cli, ["--db", str(db), "classifier", "eval", "--labels", str(labels),
                                 "--name", "centroid"])
    assert result.exit_code == 0, result.output
    assert "centroid: accuracy" in result.output and "n=4" in result.output
    row = next(open_store(db)["benchmark_results"].rows_where("model = ?", ["centroid"]))
    assert row["n"] == 4 and row["value"] >= 0.5

    # llm with a scripted model, resolved through the models registry.
    from tapir import hookimpl

    class Plugin:
        @staticmethod
        @hookimpl
        def register_backends(register):
            register("scripted", lambda name, o: ScriptedBackend(lambda m: "Math", model_id="scripted:" + name))

    from tapir.plugins import get_plugin_manager

    get_plugin_manager().register(Plugin(), name="scripted-test")
    result = runner.invoke(cli, ["--db", str(db), "classifier", "eval", "--labels", str(labels),
                                 "--name", "llm", "--model", "scripted:x"])
    assert result.exit_code == 0, result.output
    row = next(open_store(db)["benchmark_results"].rows_where("model = ?", ["llm:scripted:x"]))
    assert row["value"] == pytest.approx(0.25) and row["n"] == 4

    # label: writes task types the llm produced.
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "What is 3*3?"}\n{"instruction": "Hi", "input": "there"}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["--db", str(db), "classifier", "label", "--model", "scripted:x", str(src), str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_type"] for r in rows] == ["Math", "Math"]
    assert rows[1]["input"] == "there" and rows[0]["classifier"] == "llm:scripted:x"


def test_cli_llm_without_model_is_a_clean_error(runner, tmp_path):
    from tapir.cli import cli

    result = runner.invoke(cli, ["--db", str(tmp_path / "t.db"), "classifier", "eval", "--labels", str(SEED),
                                 "--name", "llm"])
    assert result.exit_code == 1 and "needs --model" in result.output
