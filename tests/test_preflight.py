"""Preflight: every config mistake is found before the first call, with one
message naming the key, exit code 2, no LLM call, an existing database left
byte-for-byte unchanged and no new one created. And the dry run of the
paper's config on a local 52K-row stand-in for Alpaca."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, ScriptTeacher, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_plugins():
    return [(ScriptPlugin(), "test-script")]


def _set(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


_DELETE = object()
PAIRWISE = {"name": "pairwise", "model": {"model": "script:judge"}}

# (case id, [(dotted key, value)], what the message must name)
CASES = [
    ("empty expand_per_round", [("curriculum.expand_per_round", [])], "curriculum.expand_per_round"),
    ("expand_per_round shorter than rounds", [("curriculum.expand_per_round", [4])], "expand_per_round has 1 entries"),
    ("negative alpha_step", [("curriculum.alpha_step", -0.5)], "alpha_step"),
    ("alpha above 1 in a later round", [("curriculum.alpha", 0.9)], "outside [0, 1]"),
    ("judge option typo", [("judge", {**PAIRWISE, "options": {"both_order": False}})], "both_order"),
    ("trainer option typo", [("trainer.options.learning_rat", 0.1)], "learning_rat"),
    ("trainer option wrong type", [("trainer.options.num_train_epochs", "three")], "num_train_epochs"),
    ("pairwise judge without a model", [("judge", {"name": "pairwise"})], "needs a model"),
    ("rewriter without a model", [("rewriter", {"name": "task-aware"})], "rewriter"),
    ("teacher option typo", [("teacher.options", {"sytem_prompt": "x"})], "sytem_prompt"),
    ("rewriter option typo", [("rewriter.options", {"refine_instructions": True})], "refine_instructions"),
    ("removed mfd.both_orders", [("mfd.both_orders", False)], "both_orders"),
    ("unknown top-level key", [("curriculm", {})], "curriculm"),
    ("top_fraction above 1", [("mfd.top_fraction", 1.5)], "mfd.top_fraction"),
    ("unknown judge", [("judge", {"name": "pairwise-judge"})], "judge.name"),
    ("unknown classifier", [("classifier", {"name": "nearest"})], "classifier.name"),
    ("unknown trainer", [("trainer.name", "deepspeed")], "trainer.name"),
    ("classifier labels file missing", [("classifier.options.labels_path", "nosuch.jsonl")], "nosuch.jsonl"),
    ("classifier option typo", [("classifier.options.label_path", "x")], "label_path"),
    ("data file missing", [("data.path", "nosuch-data.jsonl")], "nosuch-data.jsonl"),
    ("API model as the student", [("student.model", "openai/gpt-4o-mini")], "student.model"),
    ("hub id as the student without hf:", [("student.model", "HuggingFaceTB/SmolLM2-135M-Instruct")],
     "hf:HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("unknown model", [("teacher.model.model", "nosuch-model")], "teacher.model"),
    ("student max_new_tokens 0", [("student.generation.max_new_tokens", 0)], "max_new_tokens"),
    ("failure rate above 1", [("failures.max_failure_rate", {"teacher_answers": 2})], "max_failure_rate"),
    ("unknown recipe skip", [("recipe.skip", ["judge"])], "recipe.skip"),
    ("unknown plugin stage", [("recipe.add", [{"stage": "nosuch", "after": "train"}])], "nosuch"),
    ("unknown dedup method", [("expansion.dedup", "exact")], "expansion.dedup"),
    ("unknown encoder", [("expansion.dedup", "embedding"), ("expansion.encoder", "nosuch-encoder")],
     "expansion.encoder"),
    ("unknown task type weight", [("resample.weights", {"Maths": 1.0})], "Maths"),
    ("missing teacher", [("teacher", _DELETE)], "teacher"),
    ("judge generation nobody reads", [("judge", {**PAIRWISE, "model": {"model": "script:judge",
                                                                        "generation": {"max_new_tokens": 64}}})],
     "judge.model.generation"),
    ("judge params typo", [("judge", {**PAIRWISE, "options": {"params": {"temprature": 0.5}}})],
     "unknown option 'params.temprature'. Did you mean 'temperature'?"),
    ("failure rate for an unknown stage", [("failures.max_failure_rate", {"teacher_answer": 0.1})],
     "unknown stage 'teacher_answer'. Did you mean 'teacher_answers'?"),
    ("student backend option typo", [("student.options", {"batch_sise": 4})],
     "'student.options': unknown option 'batch_sise'. Did you mean 'batch_size'?"),
    ("sampling parameter among a backend's options", [("teacher.model.options", {"temprature": 0.2})],
     "sampling parameters go under teacher.model.generation"),
    ("student folder that does not exist", [("student.model", "hf:/nonexistent/folder")],
     "'student.model': no folder /nonexistent/folder"),
    ("api teacher without a key", [("teacher.model", {"model": "openai/gpt-4o-mini",
                                                      "options": {"api_key_env": "TAPIR_NO_SUCH_KEY"}})],
     "TAPIR_NO_SUCH_KEY"),
]


def _config(tmp_path: Path, tiny_model: Path, edits) -> Path:
    base = yaml.safe_load(write_config(tmp_path, tiny_model).read_text())
    base["trainer"]["name"] = "hf"
    data = copy.deepcopy(base)
    for key, value in edits:
        _set(data, key, value)
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("case,edits,expected", CASES, ids=[c[0] for c in CASES])
def test_config_mistakes_are_found_before_anything_runs(case, edits, expected, tmp_path, tiny_model, cli):
    from tapir.store import open_store

    db = tmp_path / "existing.db"
    open_store(db).close()
    before = db.read_bytes()
    cfg = _config(tmp_path, tiny_model, edits)
    ScriptTeacher.calls = 0
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 2, (case, result.output)
    assert expected in result.output, (case, result.output)
    assert "Traceback" not in result.output
    assert ScriptTeacher.calls == 0
    assert db.read_bytes() == before
    assert not (tmp_path / "out").exists()
    # No database is created where there was none.
    fresh = tmp_path / "fresh.db"
    result = CliRunner().invoke(cli, ["--db", str(fresh), "distill", str(cfg)])
    assert result.exit_code == 2 and not fresh.exists()


def test_all_problems_are_reported_at_once(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model, [("teacher.options", {"sytem_prompt": "x"}),
                                         ("trainer.options.learning_rat", 0.1),
                                         ("judge", {"name": "pairwise"})])
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg)])
    assert result.exit_code == 2
    for word in ("sytem_prompt", "learning_rat", "needs a model"):
        assert word in result.output


def _paper_with_local_data(tmp_path: Path) -> Path:
    rows = tmp_path / "alpaca52k.jsonl"
    words = "river mountain ledger violin protein harvest orbit lantern glacier canyon".split()
    with rows.open("w") as f:
        for i in range(52002):
            f.write(json.dumps({"instruction": f"Explain item {i}: how {words[i % 10]} and "
                                               f"{words[(i // 10) % 10]} relate.", "input": "", "output": ""}) + "\n")
    data = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    data["data"] = {"path": str(rows)}
    data["output_dir"] = str(tmp_path / "paper-out")
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_paper_config_dry_run_shows_the_papers_sizes_and_a_price(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    cfg = _paper_with_local_data(tmp_path)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "nothing was written and no model was called" in out
    assert "seed 11,000, round 1 hard 30,000, round 2 hard 50,000, round 3 hard 70,000" in out
    assert "teacher_answers (round 1)" in out and "calls: teacher 19,000" in out
    assert out.count("calls: teacher 20,000") == 2
    assert "judge      openai/gpt-4o" in out and "104,004 calls" in out  # both orders
    teacher_line = next(line for line in out.splitlines() if line.strip().startswith("teacher    openai/gpt-4o"))
    assert "$" in teacher_line and "batch API $" in teacher_line
    assert "training examples 52,002" in out
    assert not db.exists() and not (tmp_path / "paper-out").exists()


def test_paper_qwen_config_reads_openhermes_and_is_priced(tmp_path, cli, monkeypatch):
    """configs/paper-qwen.yaml with a local stand-in for OpenHermes-2.5
    (ShareGPT rows, some with a system turn): the 70K sample is drawn, the
    paper's sizes are planned and the plan has a price."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    rows = tmp_path / "openhermes.jsonl"
    words = "river mountain ledger violin protein harvest orbit lantern glacier canyon".split()
    with rows.open("w") as f:
        for i in range(72000):
            turns = [{"from": "system", "value": "You are a helpful assistant."}] if i % 3 == 0 else []
            turns += [{"from": "human", "value": f"Explain item {i}: how {words[i % 10]} and "
                                                  f"{words[(i // 10) % 10]} relate."},
                      {"from": "gpt", "value": "They relate."}]
            f.write(json.dumps({"conversations": turns}) + "\n")
    data = yaml.safe_load((ROOT / "configs" / "paper-qwen.yaml").read_text())
    assert data["data"]["hf_dataset"] == "teknium/OpenHermes-2.5" and data["data"]["sample"] == 70000
    assert data["trainer"]["options"]["learning_rate"] == 5e-6 and data["trainer"]["options"]["num_train_epochs"] == 4
    data["data"] = {"path": str(rows), "sample": 70000}
    data["output_dir"] = str(tmp_path / "out")
    cfg = tmp_path / "paper-qwen.yaml"
    cfg.write_text(yaml.safe_dump(data))
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "seed 11,000, round 1 hard 30,000, round 2 hard 50,000, round 3 hard 70,000" in out
    assert "calls: teacher 70,000" in out  # the sample, answered once
    assert "judge      openai/gpt-4-turbo-2024-04-09" in out and "140,000 calls" in out  # both orders
    teacher_line = next(line for line in out.splitlines()
                        if line.strip().startswith("teacher    openai/gpt-4-turbo-2024-04-09"))
    assert "$" in teacher_line
    assert "training examples 70,000" in out
    assert not db.exists() and not (tmp_path / "out").exists()


def test_paper_config_passes_preflight_without_a_key_only_for_the_key(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = _paper_with_local_data(tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg), "--dry-run"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and all("OPENAI_API_KEY" in line for line in lines[:4]), result.output


def test_dry_run_says_what_would_be_reused(tmp_path, tiny_model, cli):
    cfg = write_config(tmp_path, tiny_model, curriculum={"rounds": 1, "expand_per_round": [2]},
                       judge={"name": "student-loss"}, trainer={"name": "hf", "options": {"max_steps": 1}})
    db = tmp_path / "t.db"
    assert CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg)]).exit_code == 0
    data = yaml.safe_load(cfg.read_text())
    data["mfd"]["top_fraction"] = 0.25
    cfg.write_text(yaml.safe_dump(data))
    before = db.read_bytes()
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0] + (line.split()[1] if line.split()[1].startswith("(") else ""): line
             for line in result.output.splitlines() if line.startswith("  ") and len(line.split()) > 1}
    assert "reuse" in lines["teacher_answers"] and "reuse" in lines["train"] and "reuse" in lines["judge"]
    assert "reuse" not in lines["seed_cut"]
    assert db.read_bytes() == before


def test_paper_config_first_stages_run_against_a_local_server(tmp_path, tiny_model, monkeypatch):
    """configs/paper.yaml as it is, with a small local file for the data, its
    API models pointed at a local OpenAI-compatible server and the tiny model
    for the 7B student: preflight passes and its first stages run."""
    from pipeline_helpers import server_reply
    from tapir_testing.openai_server import OpenAIServer

    from tapir.pipeline.preflight import check
    from tapir.pipeline.run_engine import engine_for
    from tapir.pipeline.runner import open_run
    from tapir.store import open_store

    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    rows = tmp_path / "alpaca.jsonl"
    with rows.open("w") as f:
        for line in SEED_DATA.read_text().splitlines()[:8]:
            f.write(line + "\n")
    with OpenAIServer(reply=lambda m, b: "Math" if "#Task Classification#" in m[-1]["content"]
                      else server_reply(m, b)) as srv:
        data = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
        data["data"] = {"path": str(rows)}
        data["output_dir"] = str(tmp_path / "out")
        data["student"] = {"model": f"hf:{tiny_model}", "generation": {"max_new_tokens": 8}}
        for role in ("teacher", "judge", "classifier", "rewriter"):
            data[role]["model"]["options"]["api_base"] = srv.base_url
        cfg = tmp_path / "paper.yaml"
        cfg.write_text(yaml.safe_dump(data))
        checked = check(cfg, str(tmp_path / "t.db"))
        ctx = open_run(checked.config, checked.base_dir, open_store(tmp_path / "t.db"), loaded=checked.loaded)
        engine = engine_for(ctx)
        for step in engine.steps:
            if step.node in (("ingest", 0), ("teacher_answers", 0), ("classify", 0)):
                engine.run_step(step)
        results = {n: r for n, r in engine.results.items()}
    assert results[("ingest", 0)].ok == 8
    assert results[("teacher_answers", 0)].ok == 8 and results[("teacher_answers", 0)].failed == 0
    assert results[("classify", 0)].ok == 8
    models = sorted({b["model"] for b in srv.bodies})
    assert models == ["gpt-4o", "gpt-4o-mini"]  # the paper config's teacher and classifier
    assert srv.requests == 16


def test_dry_run_counts_no_zero_weight_examples_and_the_matched_steps(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    cfg = _paper_with_local_data(tmp_path)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(cfg), "--dry-run", "--set", "curriculum.alpha=1",
                                      "--set", "curriculum.alpha_step=0", "--set", "curriculum.max_steps=123"])
    assert result.exit_code == 0, result.output
    out = result.output
    # alpha 1: the easy rows weigh 0 and are left out; round r trains on its hard set only, for max_steps.
    assert "training examples 30,000, ~123 steps" in out and "training examples 70,000, ~123 steps" in out
    assert "training examples 52,002, ~4,878 steps" in out  # S0 keeps the trainer's own count
    assert "up-samples each round's hard pairs to the task mix" in out


def test_dry_run_reads_the_judges_reply_length_from_its_params(tmp_path, cli, monkeypatch):
    """The judge's replies are as long as its generation capability says with
    its options (judge.options.params.max_new_tokens, else its own default:
    what the run passes to the judge), not its model's generation."""
    from tapir.pipeline.dryrun import plan
    from tapir.pipeline.preflight import check

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    cfg = _paper_with_local_data(tmp_path)
    db = str(tmp_path / "t.db")
    judge_out = {}
    for length in (100, 1000):
        p = plan(check(cfg, db, overrides=[f"judge.options.params={{max_new_tokens: {length}}}"]))
        (key,) = [k for k in p.tokens if k[0] == "judge"]
        judge_out[length] = p.tokens[key][1]
        assert f"the judge's replies: up to {length} tokens, as it asks with its options" in p.assumptions
    assert judge_out[100] == 104004 * 60 and judge_out[1000] == 104004 * 600
    # Unset: the judge's own default, which its generation capability says (the pairwise judge's 512).
    p = plan(check(cfg, db))
    assert "the judge's replies: up to 512 tokens, as it asks with its options" in p.assumptions, p.assumptions
    (key,) = [k for k in p.tokens if k[0] == "judge"]
    assert p.tokens[key][1] == 104004 * int(512 * 0.6)


def test_an_unknown_model_is_reported_once(tmp_path, tiny_model, cli):
    cfg = _config(tmp_path, tiny_model, [("teacher.model.model", "nosuch:teacher"),
                                         ("rewriter.model.model", "nosuch:rewriter")])
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.output.count("unknown model 'nosuch:teacher'") == 1, result.output
    assert result.output.count("unknown model 'nosuch:rewriter'") == 1, result.output
    assert f"{cfg}: 'teacher.model': unknown model 'nosuch:teacher'." in result.output


def test_dry_run_plans_expansion_calls_with_the_expansion_reply_length(tmp_path, cli, monkeypatch):
    """Expansion asks the teacher with expansion.generation, not the teacher's own generation."""
    from tapir.pipeline.dryrun import plan
    from tapir.pipeline.preflight import check

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
    cfg = _paper_with_local_data(tmp_path)
    out = {}
    for length in (100, 1000):
        p = plan(check(cfg, str(tmp_path / "t.db"), overrides=[f"expansion.generation.max_new_tokens={length}"]))
        (key,) = [k for k in p.tokens if k[0] == "teacher"]
        out[length] = p.tokens[key][1]
    draws = int(19000 * 1.2) + 2 * int(20000 * 1.2)  # the paper's rounds, 1.2 asks per draw
    assert out[1000] - out[100] == draws * (600 - 60)
