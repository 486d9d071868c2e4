"""Stage inputs are enforced, not trusted: a stage reads the config only
through a view of the fields it declares and only the upstream nodes it
declares; data is keyed by its rows, not its path's spelling; and editing a
config field re-runs exactly the stages that read it and what follows them
(the table in docs/pipeline.md is checked against the engine's plan)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pipeline_helpers import SEED_DATA, ScriptPlugin, SpyPlugin, write_config
from test_pipeline_benchmarks import QuizPlugin

from tapir.config import DataConfig, PipelineConfig
from tapir.errors import ConfigError
from tapir.pipeline.data import load_items
from tapir.pipeline.reads import ConfigView, UndeclaredRead, config_value
from tapir.pipeline.recipe import data_digest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "pipeline.md"
START, END = "<!-- stage-inputs-table: start -->", "<!-- stage-inputs-table: end -->"


def small_config(**overrides) -> PipelineConfig:
    data = {"name": "x", "data": {"path": "d.jsonl"}, "teacher": {"name": "default", "model": {"model": "script:t"}},
            "student": {"model": "hf:x", "options": {"batch_size": 4, "dtype": "float32"}},
            "judge": {"name": "student-loss"}, "classifier": {"name": "centroid"},
            "trainer": {"name": "hf", "options": {"batch_size": 8}}}
    data.update(overrides)
    return PipelineConfig.model_validate(data)


# --------------------------------------------------------------------------- the config view


def test_the_view_gives_declared_fields_and_refuses_the_rest_naming_stage_and_field():
    cfg = small_config()
    view = ConfigView(cfg, ("mfd.delta", "teacher"), "seed_cut")
    assert view.mfd.delta == 2.0
    assert view.teacher is cfg.teacher  # a declared section is the config's own object
    with pytest.raises(UndeclaredRead, match=r"stage 'seed_cut' read config field 'mfd\.quantile'"):
        view.mfd.quantile
    with pytest.raises(UndeclaredRead, match=r"stage 'seed_cut' read config field 'seed'"):
        view.seed
    with pytest.raises(TypeError, match="read-only"):
        view.seed = 3


def test_using_a_role_reads_its_config_section():
    from tapir.pipeline.context import Context

    cfg = small_config()
    ctx = Context(cfg, None, None, Path("."), Path("out"))
    with pytest.raises(UndeclaredRead, match=r"stage 'classify' read config field 'teacher'"):
        ctx.for_stage(ConfigView(cfg, ("classifier",), "classify")).teacher
    with pytest.raises(UndeclaredRead, match=r"'trainer'"):
        ctx.for_stage(ConfigView(cfg, ("student.model",), "train")).trainer
    # The student-loss judge loads the student with its backend options: a read of student.options.
    with pytest.raises(UndeclaredRead, match=r"stage 'judge' read config field 'student'"):
        ctx.for_stage(ConfigView(cfg, ("judge",), "judge")).judge("/no/checkpoint")
    # S0's base is the student's model id; its backend options are not read.
    assert ctx.for_stage(ConfigView(cfg, ("student.model",), "train")).student_base() == "x"


def test_speed_only_backend_options_are_out_of_the_key_and_others_in():
    base = small_config()
    faster = small_config(student={"model": "hf:x", "options": {"batch_size": 64, "dtype": "float32"}})
    wider = small_config(student={"model": "hf:x", "options": {"batch_size": 4, "dtype": "bfloat16"}})
    for path in ("student", "student.options"):
        assert config_value(base, path) == config_value(faster, path)
        assert config_value(base, path) != config_value(wider, path)
    assert "batch_size" not in config_value(base, "student.options")
    assert config_value(base, "trainer.options") == {"batch_size": 8}  # a trainer's batch size changes the model


def test_data_is_identified_by_its_rows_not_its_path(tmp_path):
    spelled = Path(os.path.relpath(SEED_DATA, tmp_path))
    same = [data_digest(load_items(DataConfig(path=p, limit=8), tmp_path))
            for p in (str(SEED_DATA), str(SEED_DATA.parent / "." / SEED_DATA.name), str(spelled))]
    assert len(set(same)) == 1
    mapped = data_digest(load_items(DataConfig(path=str(SEED_DATA), limit=8, fields={"instruction": "instruction"}),
                                    tmp_path))
    assert mapped == same[0]  # a mapping that reads the same rows
    assert data_digest(load_items(DataConfig(path=str(SEED_DATA), limit=7), tmp_path)) != same[0]


# --------------------------------------------------------------------------- upstream nodes


def test_a_stage_reads_only_the_upstream_nodes_it_declares(tmp_path, tiny_model, register_plugin):
    from tapir.pipeline.engine import Job
    from tapir.pipeline.preflight import check
    from tapir.pipeline.run_engine import planning_engine

    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    engine = planning_engine(check(write_config(tmp_path, tiny_model), str(tmp_path / "t.db")))
    steps = {s.node: s for s in engine.steps}
    # The wiring comes from the stages' declarations.
    assert steps[("seed_cut", 0)].after == (("judge", 0),)
    assert steps[("judge", 0)].after == (("ingest", 0), ("teacher_answers", 0), ("train", 0),
                                         ("student_answers", 0))
    assert steps[("teacher_answers", 2)].after == (("expand", 2),)
    job = Job(engine, steps[("seed_cut", 0)], "k", True)
    assert job.scope("judge") == engine.key_of(("judge", 0))
    with pytest.raises(UndeclaredRead, match=r"stage 'seed_cut' read node teacher_answers \(round 0\)"):
        job.scope("teacher_answers")
    with pytest.raises(UndeclaredRead, match=r"node train \(round 0\)"):
        job.upstream_info("train")
    # Declared but not in this recipe (no heldout evaluation): None, as before.
    export = Job(engine, steps[("export", 0)], "k", True)
    assert export.scope("evaluate_base") is None


def test_the_recipe_refuses_a_stage_that_reads_a_later_node():
    from tapir.errors import TapirError
    from tapir.pipeline.recipe import wire

    class Reads:
        def __init__(self, *nodes):
            self.nodes = nodes

        def upstream(self, step):
            return self.nodes

    stages = {"a": Reads(("b", 0)), "b": Reads(), "c": Reads(("a", None), ("b", 0), ("gone", 0))}
    steps = wire([("b", 0, (), ()), ("a", 0, (), ()), ("c", 1, (), ())], stages)
    assert [s.after for s in steps] == [(), (("b", 0),), (("a", 0), ("b", 0))]  # "gone": not in this recipe
    with pytest.raises(TapirError, match=r"recipe: a reads b \(round 0\), which runs after it"):
        wire([("a", 0, (), ()), ("b", 0, (), ())], stages)


# --------------------------------------------------------------------------- the table

# Each edit, and the nodes that read the edited field (by hand); the test
# checks that the plan re-runs exactly those and everything downstream of
# them, and nothing else. Export re-runs on every edit (its key holds the
# run id, a hash of the whole config) and is left out.
SAME_FILE = str(SEED_DATA.parent / "." / SEED_DATA.name)
ALL_ROUNDS = (0, 1, 2)
EDITS: list[tuple[str, str, set]] = [
    ("data.path", f"data.path={SAME_FILE}", set()),
    ("data.fields", "data.fields={instruction: instruction}", set()),
    ("data.limit", "data.limit=11", {("ingest", 0)}),
    ("data.use_dataset_answers", "data.use_dataset_answers=true", {("teacher_answers", 0)}),
    ("seed", "seed=1", {("train", 0), ("train", 1), ("train", 2), ("resample", 1), ("resample", 2),
                        ("expand", 1), ("expand", 2), ("seed_cut", 0)}
     | {("student_answers", r) for r in ALL_ROUNDS}),
    ("teacher.model.generation.max_new_tokens", "teacher.model.generation.max_new_tokens=200",
     {("teacher_answers", 0), ("teacher_answers", 1), ("teacher_answers", 2), ("expand", 1), ("expand", 2),
      ("rewrite", 1), ("rewrite", 2), ("heldout_answers", 0)}),
    ("truncation.teacher", "truncation.teacher=keep",
     {("teacher_answers", 0), ("teacher_answers", 1), ("teacher_answers", 2)}),
    ("student.options.batch_size", "student.options.batch_size=4", set()),  # speed only
    ("student.options.dtype", "student.options.dtype=bfloat16",
     {("student_answers", r) for r in ALL_ROUNDS} | {("judge", r) for r in ALL_ROUNDS}
     | {("evaluate", r) for r in ALL_ROUNDS} | {("evaluate_base", 0)}),
    ("student.generation.max_new_tokens", "student.generation.max_new_tokens=10",
     {("student_answers", r) for r in ALL_ROUNDS}),
    ("judge.options", "judge.options.method=embedding", {("judge", r) for r in ALL_ROUNDS}),
    ("mfd.one_order_failed", "mfd.one_order_failed=accept", {("judge", r) for r in ALL_ROUNDS}),
    ("mfd.top_fraction", "mfd.top_fraction=0.4", {("seed_cut", 0)}),
    ("curriculum.seed_size", "curriculum.seed_size=100", {("seed_cut", 0)}),
    ("mfd.allow_nonpositive", "mfd.allow_nonpositive=true", {("seed_cut", 0)}),
    ("classifier.options", "classifier.options.temperature=0.5", {("classify", 0)}),
    ("resample.weights", "resample.weights=uniform", {("resample", 1), ("resample", 2), ("expand", 1),
                                                      ("expand", 2), ("train", 1), ("train", 2)}),
    ("curriculum.expand_per_round", "curriculum.expand_per_round.1=2",
     {("resample", 1), ("resample", 2), ("expand", 1), ("expand", 2)}),
    ("expansion.dedup_threshold", "expansion.dedup_threshold=0.8", {("expand", 1), ("expand", 2)}),
    ("rewriter.model.generation", "rewriter.model.generation.max_new_tokens=100", {("rewrite", 1), ("rewrite", 2)}),
    ("trainer.options", "trainer.options.lr=0.002", {("train", r) for r in ALL_ROUNDS}),
    ("curriculum.alpha", "curriculum.alpha=0.4", {("train", 1), ("train", 2)}),
    ("curriculum.alpha_step", "curriculum.alpha_step=0.1", {("train", 1), ("train", 2)}),
    ("curriculum.weighting", "curriculum.weighting=share", {("train", 1), ("train", 2)}),
    ("curriculum.start_from", "curriculum.start_from=base", {("train", 1)}),
    ("curriculum.max_steps", "curriculum.max_steps=3", {("train", 1), ("train", 2)}),
    ("curriculum.upsample_limit", "curriculum.upsample_limit=2", {("train", 1), ("train", 2)}),
    ("evaluation.heldout.limit", "evaluation.heldout.limit=5", {("heldout_answers", 0), ("evaluate_base", 0),
                                                                ("evaluate", 0), ("evaluate", 1), ("evaluate", 2)}),
    ("evaluation.benchmarks", "evaluation.benchmarks.0.max_failure_rate=0.5",
     {("benchmarks_base", 0), ("benchmarks", 0), ("benchmarks", 1), ("benchmarks", 2)}),
    ("failures.max_failure_rate", "failures.max_failure_rate={judge: 0.5}", set()),
    ("output_dir", "output_dir=elsewhere", set()),
    ("name", "name=renamed", set()),
]


def downstream(steps, nodes: set) -> set:
    """``nodes`` and every node that reads one of them, transitively."""
    out = set(nodes)
    for step in steps:  # the steps are in order: upstream first
        if any(n in out for n in step.after):
            out.add(step.node)
    return out


def label(nodes: set, steps) -> str:
    """'judge 0-2, seed_cut' for a set of nodes, in recipe order."""
    rounds: dict[str, list[int]] = {}
    for step in steps:
        if step.node in nodes:
            rounds.setdefault(step.stage, []).append(step.round)
    every = {}
    for step in steps:
        every.setdefault(step.stage, []).append(step.round)
    parts = []
    for stage, rs in rounds.items():
        if every[stage] == [0]:
            parts.append(stage)
        elif rs == every[stage] and len(rs) > 1:
            parts.append(f"{stage} (all)")
        else:
            parts.append(f"{stage} " + ", ".join(map(str, rs)))
    return ", ".join(parts) or "nothing"


def render(rows: list[tuple[str, str, str]]) -> str:
    lines = [START, "", "| config field edited | stages that read it | stages that re-run (they and what follows) |",
             "|---|---|---|"]
    lines += [f"| `{field}` | {direct} | {rerun} |" for field, direct, rerun in rows]
    return "\n".join(lines + ["", END])


def test_each_config_field_reruns_exactly_the_stages_that_read_it(tmp_path, tiny_model, register_plugin,
                                                                    monkeypatch):
    """The full pipeline (2 rounds, re-judged each round, held-out loss,
    a benchmark) under the enforcing view; then the plan of each edit."""
    from tapir.pipeline.preflight import check
    from tapir.pipeline.run_engine import planning_engine
    from tapir.pipeline.runner import distill

    monkeypatch.setenv("TAPIR_QUIET", "1")
    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(QuizPlugin(), "test-quiz")
    cfg = write_config(
        tmp_path, tiny_model, data={"path": str(SEED_DATA), "limit": 12},
        trainer={"name": "hf", "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_length": 64,
                                           "lr": 1e-3}},
        curriculum={"rounds": 2, "alpha": 0.3, "alpha_step": 0.2, "expand_per_round": [4, 3],
                    "recompute_mfd": True},
        evaluation={"heldout": {"path": str(SEED_DATA), "skip": 12, "limit": 6},
                    "benchmarks": [{"name": "quiz"}]})
    db = str(tmp_path / "t.db")
    out = distill(cfg, db)
    assert all(r.status == "done" for r in out.results)
    steps = out.engine.steps
    nodes = [s.node for s in steps]
    assert ("benchmarks", 2) in nodes and ("judge", 2) in nodes and ("evaluate", 2) in nodes

    def rerun(*overrides: str) -> set:
        plan = planning_engine(check(cfg, db, list(overrides))).plan()
        return {step.node for step, _, action in plan if action != "reuse" and step.stage != "export"}

    assert rerun() == set()  # the same config: everything reused
    rows, wrong = [], []
    for field, override, direct in EDITS:
        expected = {n for n in downstream(steps, direct) if n[0] != "export"}
        try:
            got = rerun(override)
        except ConfigError as exc:
            wrong.append(f"{override}: {exc}")
            continue
        if got != expected:
            wrong.append(f"{override}: re-runs {label(got, steps)}; expected {label(expected, steps)}")
        rows.append((field, label(direct, steps), label(expected, steps)))
    assert not wrong, "\n".join(wrong)

    table = render(rows)
    text = DOC.read_text(encoding="utf-8")
    if os.environ.get("TAPIR_WRITE_DOCS"):
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S)
        DOC.write_text(text, encoding="utf-8")
    assert table in text, "docs/pipeline.md's stage-inputs table is stale: re-run this test with TAPIR_WRITE_DOCS=1"
