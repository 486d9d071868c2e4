"""Model cards by the Hub's conventions (tapir.pipeline.modelcard): base_model
as a hub id, relative paths, the training data, model-index from benchmark
results, a filled adapter card, and export.push_to_hub against a mocked HfApi."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import ScriptedClassifier, ScriptPlugin, SpyPlugin, SpyTrainer, write_config
from tapir import hookimpl
from tapir.pipeline.modelcard import front_matter_of, hub_id_for, model_index, relative
from tapir.options import Options, option


class ScriptedBench:
    class Options(Options):
        limit: int | None = option(None, "items")

    def __init__(self, options):
        self.options = options

    def preflight(self, model):
        return []

    def run(self, model, store, *, run_id, force=False):
        meta = {"judge": "fake/judge", "judge_mode": "reference", "failures": 0, "failure_reasons": {},
                "failure_example": None, "data_version": "v1", "subset": "limit=5"}
        return [{"task": "overall", "metric": "score", "value": 6.5, "stderr": 0.25, "n": 5, "meta": meta},
                {"task": "overall", "metric": "failures", "value": 0, "stderr": None, "n": 5, "meta": meta}]


class CardPlugin:
    def __init__(self, tiny_model):
        self.tiny_model = tiny_model

    @hookimpl
    def register_models(self, register):
        register("tiny-hub", backend="hf", model=str(self.tiny_model), hub_id="org/tiny-base",
                 description="the tiny model, as if it were on the hub")

    @hookimpl
    def register_classifiers(self, register):
        register("scripted", ScriptedClassifier)

    @hookimpl
    def register_evaluators(self, register):
        register("mtbench", ScriptedBench, description="scripted MT-Bench")


class FakeHfApi:
    calls: list = []

    def create_repo(self, **kwargs):
        FakeHfApi.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        FakeHfApi.calls.append(("upload_folder", {**kwargs, "readme": (folder / "README.md").read_text()}))


# --------------------------------------------------------------------------- units


def test_hub_ids(tmp_path):
    assert hub_id_for("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # registered hub_id
    assert hub_id_for("hf:HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id_for("openai/gpt-4o") is None  # an API model has no hub weights
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert hub_id_for(str(folder)) is None and hub_id_for(f"hf:{folder}") is None
    (folder / "README.md").write_text("---\nbase_model: org/base\ntags: [x]\n---\n# card\n")
    assert front_matter_of(folder) == {"base_model": "org/base", "tags": ["x"]}
    assert hub_id_for(str(folder)) == "org/base"  # a checkpoint of a hub model


def test_relative_paths(tmp_path):
    card = tmp_path / "out" / "stages" / "train-r1"
    assert relative(str(tmp_path / "out" / "stages" / "train-r0"), card) == "../train-r0"
    assert relative(f"hf:{tmp_path}/tiny", card) == "hf:../../../tiny"
    assert relative("openai/gpt-4o", card) == "openai/gpt-4o"
    assert relative("script:teacher", card) == "script:teacher"


def test_model_index_shape():
    rows = [{"benchmark": "mtbench", "task": "overall", "metric": "score", "value": 6.5, "stderr": 0.2, "n": 80,
             "subset": None, "judge": "openai/gpt-4", "judge_mode": "reference"},
            {"benchmark": "lmeval", "task": "arc_easy", "metric": "acc", "value": 0.5, "stderr": None, "n": 10,
             "subset": "limit=10", "judge": None, "judge_mode": None}]
    (entry,) = model_index("run-round-1", rows)
    assert entry["name"] == "run-round-1"
    mt, arc = entry["results"]
    assert mt["task"]["type"] == "text-generation"
    assert mt["dataset"] == {"name": "MT-Bench", "type": "mtbench",
                             "args": {"judge": "openai/gpt-4", "judge_mode": "reference"}}
    assert mt["metrics"] == [{"type": "score", "value": 6.5, "name": "overall score", "verified": False}]
    assert arc["dataset"] == {"name": "lm-eval (arc_easy)", "type": "arc_easy", "args": {"subset": "limit=10"}}


# --------------------------------------------------------------------------- a run


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    return front_matter_of(folder), text


def test_cards_of_a_lora_run(tmp_path, tiny_model, register_plugin, monkeypatch):
    import huggingface_hub

    import tapir

    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    register_plugin(CardPlugin(tiny_model), "test-cards")
    SpyTrainer.seen = []
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("TAPIR_QUIET", "1")
    path = write_config(tmp_path, tiny_model)
    config = yaml.safe_load(path.read_text())
    config["data"]["limit"] = 8
    config["student"]["model"] = "tiny-hub"
    config["classifier"] = {"name": "scripted"}
    config["trainer"]["options"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    config["curriculum"] = {"rounds": 1, "expand_per_round": [4]}
    db = tmp_path / "cards.db"
    result = tapir.distill(config, db=db)
    assert FakeHfApi.calls == []  # no push_to_hub configured
    s0, s1 = result.checkpoints[0], result.checkpoints[1]

    front, text = _card(s1)
    assert front["base_model"] == "org/tiny-base" and front["base_model_relation"] == "finetune"
    assert front["library_name"] == "transformers" and "tapir" in front["tags"]
    assert "model-index" not in front  # no benchmark yet
    assert str(tmp_path) not in text  # relative paths only
    assert f"| trained from | S0: `../{s0.name}` |" in text
    assert "[org/tiny-base](https://huggingface.co/org/tiny-base) (`tiny-hub`)" in text
    assert "https://pypi.org/project/tapir-distill/" in text
    info = result.stage("train", 1).info
    assert (f"- {info['hard_examples']} hard (the seed cut D_S plus the expanded instructions, rewritten) and "
            f"{info['easy_examples']} easy examples; alpha 0.30") in text
    assert f"- {info['examples']} training examples from `seed_instructions.jsonl` (first 8 rows)" in text
    assert "- Task mix: " in text and "not known" not in text
    _, text0 = _card(s0)
    assert "S0: every ingested instruction" in text0
    assert "- 8 training examples from `seed_instructions.jsonl` (first 8 rows); by origin: seed 8." in text0
    assert "- Task mix: " in text0  # the seed file's own task_type column

    adapter_front = front_matter_of(s1 / "adapter")
    adapter_text = (s1 / "adapter" / "README.md").read_text()
    # S1's adapter applies to S0 (no hub id), so no base_model; S0's applies to the base
    assert adapter_front["library_name"] == "peft" and "base_model" not in adapter_front
    assert front_matter_of(s0 / "adapter")["base_model"] == "org/tiny-base"
    assert "More Information Needed" not in adapter_text  # peft's template is gone
    assert "# tiny-pipeline: LoRA adapter of student S1" in adapter_text
    assert "| rank r | 4 |" in adapter_text and "| lora_alpha | 8 |" in adapter_text
    assert f"base = AutoModelForCausalLM.from_pretrained('../../{s0.name}')" in adapter_text
    assert str(tmp_path) not in adapter_text

    # a benchmark of S1, then a re-run: every stage reused, the export refreshes the cards and pushes
    rows = tapir.bench.run("mtbench", str(s1), {"limit": 5}, db=db)
    assert [r["value"] for r in rows] == [6.5, 0]
    again = tapir.distill(config, db=db, overrides=["export.push_to_hub={repo_id: me/tiny, private: true}"])
    assert {s.status for s in again.stages if s.stage != "export"} == {"reused"}
    front, text = _card(s1)
    (entry,) = front["model-index"]
    assert entry["name"] == "tiny-pipeline-round-1"
    (res,) = entry["results"]
    assert res["dataset"]["type"] == "mtbench" and res["dataset"]["args"]["subset"] == "limit=5"
    assert res["metrics"] == [{"type": "score", "value": 6.5, "name": "overall score", "verified": False}]
    assert "| MT-Bench | overall | score | 6.5 ± 0.25 | 5 | limit=5 | fake/judge (reference) |" in text
    assert "model-index" not in front_matter_of(s0)  # only S1 was benchmarked

    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder", "upload_folder",
                                               "create_repo", "upload_folder"]  # the model rounds, then the dataset
    assert FakeHfApi.calls[0][1] == {"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True}
    _check_dataset_push(FakeHfApi.calls[3:], again, tmp_path)
    uploads = [c[1] for c in FakeHfApi.calls[1:3]]
    assert [(u["repo_id"], u["folder_path"], u["path_in_repo"]) for u in uploads] == [
        ("me/tiny", str(s0), "round-0"), ("me/tiny", str(s1), "round-1")]
    assert "model-index" in uploads[1]["readme"]  # the card was refreshed before the upload
    assert again.stage("export").info["pushed"] == {"0": "https://huggingface.co/me/tiny/tree/main/round-0",
                                                    "1": "https://huggingface.co/me/tiny/tree/main/round-1"}

    # one repo per round with {round}; an upload error is one line with the fix
    FakeHfApi.calls = []
    tapir.distill(config, db=db, overrides=["export.push_to_hub={repo_id: 'me/tiny-r{round}', dataset: false}"])
    assert [(c[0], c[1]["repo_id"], c[1].get("path_in_repo")) for c in FakeHfApi.calls] == [
        ("create_repo", "me/tiny-r0", None), ("upload_folder", "me/tiny-r0", None),
        ("create_repo", "me/tiny-r1", None), ("upload_folder", "me/tiny-r1", None)]

    def refuse(self, **kwargs):
        raise RuntimeError("401 Unauthorized")

    monkeypatch.setattr(FakeHfApi, "create_repo", refuse)
    with pytest.raises(tapir.errors.TapirError) as err:
        tapir.distill(config, db=db, overrides=["export.push_to_hub.repo_id=me/other"])
    assert str(err.value).startswith("export.push_to_hub: uploading round 0")
    assert "401 Unauthorized" in str(err.value) and "huggingface-cli login" in str(err.value)
    assert json.loads(json.dumps(front))  # plain YAML types


def _check_dataset_push(calls, result, tmp_path):
    """The distilled dataset: a dataset repo, one split a round in chat messages, and its card."""
    (create, create_kw), (upload, upload_kw) = calls
    assert (create, create_kw) == ("create_repo", {"repo_id": "me/tiny", "repo_type": "dataset", "private": True,
                                                   "exist_ok": True})
    assert upload == "upload_folder" and upload_kw["repo_type"] == "dataset" and upload_kw["repo_id"] == "me/tiny"
    folder = Path(upload_kw["folder_path"])
    card = upload_kw["readme"]
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [
        {"split": "round_0", "path": "data/round_0.jsonl"}, {"split": "round_1", "path": "data/round_1.jsonl"}]}]
    assert front["task_categories"] == ["text-generation"] and "tapir" in front["tags"]
    for r in (0, 1):
        rows = [json.loads(line) for line in (folder / "data" / f"round_{r}.jsonl").read_text().splitlines()]
        assert len(rows) == result.stage("train", r).info["examples"]
        first = rows[0]
        assert [m["role"] for m in first["messages"]][-2:] == ["user", "assistant"]
        assert first["messages"][-1]["content"] and set(first) >= {"id", "task_type", "origin", "weight"}
        assert f"| round_{r} | {len(rows)} |" in card
    weights = {json.loads(line)["weight"] for line in (folder / "data" / "round_1.jsonl").read_text().splitlines()}
    assert weights == {0.3, 0.7}  # Eq. 4: hard alpha_1, easy 1 - alpha_1
    assert "## Cost of the run" in card and "| teacher_answers |" in card
    assert str(tmp_path) not in card and "/work" not in card  # no local folder on the Hub
    assert "path: seed_instructions.jsonl" in card  # files named by their name
    assert result.stage("export").info["pushed_dataset"]["repo"] == "https://huggingface.co/datasets/me/tiny"


def test_cards_read_the_training_counts_the_train_stage_recorded(tmp_path, tiny_model, register_plugin, monkeypatch):
    """The export stage builds only the last round's training set (for the
    dataset rows): each round's card takes its counts from what its train
    stage recorded (``card_data``). A train stage from before it recorded
    them is counted from the set built again, with the same card."""
    import sqlite3

    import tapir
    import tapir.pipeline.stages.train as train_stage

    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    register_plugin(CardPlugin(tiny_model), "test-cards")
    monkeypatch.setenv("TAPIR_QUIET", "1")
    config = yaml.safe_load(write_config(tmp_path, tiny_model).read_text())
    config["data"]["limit"] = 8
    config["classifier"] = {"name": "scripted"}
    config["curriculum"] = {"rounds": 1, "expand_per_round": [4]}
    db = tmp_path / "counts.db"
    built: list[int] = []
    real = train_stage.training_set
    monkeypatch.setattr(train_stage, "training_set", lambda job, r, *a: built.append(r) or real(job, r, *a))
    result = tapir.distill(config, db=db)
    s0, s1 = result.checkpoints[0], result.checkpoints[1]
    counts = result.stage("train", 1).info["card_data"]
    assert counts["examples"] == result.stage("train", 1).info["examples"] and counts["hard"] > 0
    assert built == [0, 1, 1]  # each train stage once, then the export's dataset rows; none for the cards
    cards = {s: _card(s)[1] for s in (s0, s1)}

    conn = sqlite3.connect(db)  # train stages recorded by an older tapir: no card_data
    for (key, info) in conn.execute("select key, info from stages where name = 'train'").fetchall():
        old = json.loads(info)
        old.pop("card_data")
        conn.execute("update stages set info = ? where key = ?", [json.dumps(old), key])
    conn.execute("delete from stages where name = 'export'")  # so the re-run exports again
    conn.commit()
    conn.close()
    built.clear()
    tapir.distill(config, db=db)
    assert built == [1, 0, 1]  # the dataset rows, then each card's set built again
    assert {s: _card(s)[1] for s in (s0, s1)} == cards


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hard_weight_share_counts_only_the_hard_examples_trained(alpha):
    """Examples of weight 0 are left out, so with alpha 0 the set holds only
    easy examples: none of its weight is hard (the card once counted the
    first len(hard) examples, easy ones, as hard). Under ``share`` the
    hard examples carry alpha of the weight."""
    from tapir.pipeline.stages.train import training_counts, weighted_examples
    from tapir.roles import Item

    hard = [Item(f"h{i}", "q", output="a", task_type="Math") for i in range(3)]
    easy = [Item(f"e{i}", "q", output="a", task_type="Writing") for i in range(7)]
    examples = weighted_examples(hard, easy, alpha, "share")
    counts = training_counts(1, hard, easy, alpha, "share", examples)
    assert counts["hard_weight_share"] == pytest.approx(alpha)
    assert counts["examples"] == len(examples)
