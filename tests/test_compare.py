"""``tapir compare``: one row per benchmark run, never merged; judge, mode,
subset, data version, n and failures shown; deltas only between runs with the
same settings; unknown names are errors; classifier rows are not models."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tapir import hookimpl
from tapir.bench import BenchFailed, bench_run_id, run_benchmark, upsert_rows
from tapir.compare import UnknownReference, build, render
from tapir.options import Options, option
from tapir.runs import Run


class Scored:
    """Scores a model ``SCORES[model]`` on 'overall' (and per-category rows
    without a ``limit``); ``FAILURES[model]`` items could not be scored."""

    name = "scored"
    SCORES: dict[str, float] = {}
    FAILURES: dict[str, int] = {}

    class Options(Options):
        judge_model: str = option("judge-x", "the judge")
        judge_mode: str = option("reference", "reference | robust")
        limit: int | None = option(None, "a subset", gt=0)
        batch_size: int = option(1, "does not change scores")

    def __init__(self, options: "Scored.Options"):
        self.options = options

    def preflight(self, model):
        return []

    def run(self, model, store, *, run_id, force=False):
        o = self.options
        failures = Scored.FAILURES.get(model, 0)
        meta = {"judge": o.judge_model, "judge_mode": o.judge_mode, "failures": failures,
                "failure_reasons": {"no rating": failures} if failures else {},
                "failure_example": "q81: no rating" if failures else None, "data_version": "sha256:0123456789abcdef",
                "subset": f"limit={o.limit}" if o.limit else None}
        score = Scored.SCORES[model]
        rows = [{"task": "overall", "metric": "score", "value": score, "stderr": 0.1, "n": 20 - failures,
                 "meta": meta}]
        if not o.limit:
            rows.append({"task": "writing", "metric": "score", "value": score + 1, "stderr": None, "n": 2,
                         "meta": {**meta, "failures": 0}})
        return rows


class Plugin:
    @hookimpl
    def register_evaluators(self, register):
        register("scored", Scored, description="scores by model")
        register("scored2", Scored, description="scores by model, again")


@pytest.fixture
def scored(register_plugin, monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    Scored.SCORES = {"base-a": 5.0, "/ck/a1": 5.5, "/ck/a2": 6.25, "m1": 4.0, "m2": 4.5}
    Scored.FAILURES = {}
    register_plugin(Plugin(), "test-compare")
    return Scored


def _training(store):
    run = Run.start(store, {"distill": "demo"}, name="distill")
    for rnd in (1, 2):
        store["checkpoints"].insert({"scope": run.id, "round": rnd, "path": f"/ck/a{rnd}", "base_model": "base-a",
                                     "trainer": "fake"})
    return run.id


def rid(model, options=None, bench="scored"):
    return bench_run_id(bench, model, options or {})


def test_two_runs_of_one_model_are_two_rows_never_merged(store, scored):
    run_benchmark(store, "scored", "m1", {})
    scored.SCORES["m1"] = 3.0
    run_benchmark(store, "scored", "m1", {"limit": 5, "judge_model": "judge-y"})
    table = build(store, ["m1"])
    [section] = table.sections
    assert section.columns == ["overall/score", "writing/score"]
    got = [(e.run_id, e.subset, e.judge, e.scores) for e in section.entries]
    assert got == [
        (rid("m1"), None, "judge-x", {"overall/score": 4.0, "writing/score": 5.0}),
        # the subset run has no category rows: empty, never the other run's 5.0
        (rid("m1", {"limit": 5, "judge_model": "judge-y"}), "limit=5", "judge-y",
         {"overall/score": 3.0, "writing/score": None}),
    ]
    assert render(table, "markdown", full=True) == f"""## scored

| model | base | round | run | status | settings | subset | judge | mode | data | n | failures | overall/score | writing/score |
|---|---|---|---|---|---|---|---|---|---|---|---|---:|---:|
| m1 |  |  | {rid("m1")} | done | defaults | full | judge-x | reference | sha256:012345… | 20 | 0 | 4.000 | 5.000 |
| m1 |  |  | {rid("m1", {"limit": 5, "judge_model": "judge-y"})} | done | judge_model=judge-y limit=5 | limit=5 | judge-y | reference | sha256:012345… | 20 | 0 | 3.000 |  |
"""
    # A benchmark run id names exactly that run.
    only = build(store, [rid("m1", {"limit": 5, "judge_model": "judge-y"})])
    assert [e.run_id for e in only.entries] == [rid("m1", {"limit": 5, "judge_model": "judge-y"})]


def test_base_rows_and_deltas_only_between_the_same_settings(store, scored):
    train = _training(store)
    for model in ("base-a", "/ck/a1"):
        run_benchmark(store, "scored", model, {})
        run_benchmark(store, "scored", model, {"limit": 5})
    run_benchmark(store, "scored", "/ck/a2", {"batch_size": 8})  # a neutral option: still comparable
    run_benchmark(store, "scored", "/ck/a2", {"judge_mode": "robust"})  # the base has no robust run
    run_benchmark(store, "scored2", "/ck/a1", {})  # the base has no scored2 run
    table = build(store, [train])
    assert [s.benchmark for s in table.sections] == ["scored", "scored2"]
    rows = [(e.label, e.is_base, e.round, e.subset, e.judge_mode, e.delta.get("overall/score"), e.delta_vs, e.delta_note)
            for e in table.section("scored").entries]
    assert rows == [
        ("base-a · base", True, None, None, "reference", None, None, None),
        ("base-a · base", True, None, "limit=5", "reference", None, None, None),
        ("base-a · distill · S1", False, 1, None, "reference", 0.5, rid("base-a"), None),
        ("base-a · distill · S1", False, 1, "limit=5", "reference", 0.5, rid("base-a", {"limit": 5}), None),
        ("base-a · distill · S2", False, 2, None, "reference", 1.25, rid("base-a"), None),
        ("base-a · distill · S2", False, 2, None, "robust", None, None, "no base run with the same settings"),
    ]
    base, ck1 = table.section("scored2").entries
    assert (base.label, base.status, base.run_id) == ("base-a · base", "no results", None)
    assert ck1.delta_note == "base has no run of this benchmark"
    md = render(table, "markdown", full=True)
    assert f"| base-a · distill · S1 | base-a | 1 | {rid('/ck/a1', {'limit': 5})} | {rid('base-a', {'limit': 5})} | limit=5 | " \
           "+0.500 |  |" in md
    assert f"| base-a · distill · S2 | base-a | 2 | {rid('/ck/a2', {'judge_mode': 'robust'})} | none: no base run with the same " \
           "settings | full |  |  |" in md
    data = json.loads(render(table, "json", full=True))
    assert data["benchmarks"] == {"scored": ["overall/score", "writing/score"], "scored2": ["overall/score",
                                                                                          "writing/score"]}
    first_student = data["rows"][2]
    assert (first_student["model"], first_student["run_id"], first_student["delta"], first_student["delta_vs"]) == (
        "/ck/a1", rid("/ck/a1"), {"overall/score": 0.5, "writing/score": 0.5}, rid("base-a"))
    assert "delta" not in data["rows"][0]
    assert render(table, "markdown", delta=False, full=True).count("delta vs base") == 0


def test_failures_judge_and_failed_runs_are_shown(store, scored):
    scored.FAILURES = {"m2": 13}
    with pytest.raises(BenchFailed):
        run_benchmark(store, "scored", "m2", {})
    run_benchmark(store, "scored", "m1", {"judge_mode": "robust"})
    table = build(store)
    robust, failed = table.entries  # by label: m1, m2
    assert (failed.model, failed.status, failed.failures, failed.n, failed.failure_reasons) == (
        "m2", "failed", 13, 7, {"no rating": 13})
    assert (robust.model, robust.status, robust.judge_mode, robust.failures) == ("m1", "done", "robust", 0)
    text = render(table, "table", full=True)
    assert text.splitlines()[0] == "scored:"
    head, row_robust, row_failed = text.splitlines()[1:4]
    assert head.split() == ["model", "base", "round", "run", "status", "settings", "subset", "judge", "mode", "data",
                            "n", "failures", "overall/score", "writing/score"]
    assert row_failed.split() == ["m2", rid("m2"), "failed", "defaults", "full", "judge-x", "reference",
                                  "sha256:012345…", "7", "13", "4.500", "5.500"]
    assert row_robust.split()[:8] == ["m1", rid("m1", {"judge_mode": "robust"}), "done", "judge_mode=robust", "full",
                                      "judge-x", "robust", "sha256:012345…"]


def test_old_rows_without_meta_show_question_marks(store, scored):
    upsert_rows(store, "scored", "legacy", "0ld0ld0ld0ld", [{"task": "overall", "metric": "score", "value": 3.5}])
    [entry] = build(store).entries
    assert (entry.run_id, entry.status, entry.judge, entry.judge_mode, entry.subset, entry.data_version,
            entry.failures) == ("0ld0ld0ld0ld", "?", "?", "?", "?", "?", "?")
    assert render(build(store), "markdown", full=True).splitlines()[4] == \
        "| legacy |  |  | 0ld0ld0ld0ld | ? | ? | ? | ? | ? | ? |  | ? | 3.500 |"


def test_classifier_rows_are_not_models(store, scored, tmp_path):
    from tapir_classifiers.cli import record_accuracy

    run_benchmark(store, "scored", "m1", {})
    db = tmp_path / "test.db"  # the store fixture's file
    record_accuracy(str(db), "encoder-clf", {"accuracy": 0.75, "n": 40, "per_label": {}}, {"classifier": "encoder"})
    table = build(store)
    assert [e.model for e in table.entries] == ["m1"]
    assert table.classifiers == [{"benchmark": "classifier", "model": "encoder-clf", "task": "task-type",
                                  "metric": "accuracy", "value": 0.75, "n": 40}]
    assert render(table, "markdown", full=True).splitlines()[-1] == \
        "Classifier accuracy (tapir classifier eval; not models): encoder-clf accuracy 0.750 (n=40)"
    with pytest.raises(UnknownReference, match="'encoder-clf' has classifier results only"):
        build(store, ["encoder-clf"])


def test_unknown_names_are_errors(store, scored):
    run_benchmark(store, "scored", "m1", {})
    run_benchmark(store, "scored", "m2", {})
    with pytest.raises(UnknownReference, match=r"unknown model, run or checkpoint 'nosuch'\nStored models: m1, m2;"):
        build(store, ["m1", "nosuch"])
    with pytest.raises(UnknownReference, match="no results for benchmark.*nope.*with results: scored"):
        build(store, benchmarks=["nope"])


def test_cli_compare(cli, scored, tmp_path):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    for args in (["-m", "m1"], ["-m", "m2"], ["-m", "m2", "-o", "limit=3"]):
        assert runner.invoke(cli, ["--db", db, "bench", "scored", *args]).exit_code == 0
    result = runner.invoke(cli, ["--db", db, "compare", "nosuch"])
    assert result.exit_code == 2
    assert result.stderr == ("Error: unknown model, run or checkpoint 'nosuch'\n"
                             "Stored models: m1, m2; or give a run id or name (`tapir runs`), a study name or a "
                             "checkpoint path.\n")
    result = runner.invoke(cli, ["--db", db, "compare", "--full", "--format", "csv", "--base", "m1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("benchmark,label,model,base,round,run,status,settings,subset,judge,judge_mode,"
                               "data_version,n,failures,scored/overall/score,scored/writing/score,"
                               "delta scored/overall/score")
    assert lines[1:] == [
        f"scored,m1 · base,m1,(base),,{rid('m1')},done,defaults,full,judge-x,reference,sha256:0123456789abcdef,20,0,4.0,5.0,,,",
        f"scored,m2,m2,m1,,{rid('m2')},done,defaults,full,judge-x,reference,sha256:0123456789abcdef,20,0,4.5,5.5,"
        f"0.5,0.5,{rid('m1')}",
        f"scored,m2,m2,m1,,{rid('m2', {'limit': 3})},done,limit=3,limit=3,judge-x,reference,sha256:0123456789abcdef,"
        "20,0,4.5,,,,",
    ]
    result = runner.invoke(cli, ["--db", db, "compare", "--full", "--format", "json"])
    assert [(r["model"], r["subset"]) for r in json.loads(result.stdout)["rows"]] == [
        ("m1", None), ("m2", None), ("m2", "limit=3")]
    result = runner.invoke(cli, ["--db", db, "compare", "--full", "--format", "table"])
    assert result.exit_code == 0 and result.stdout.startswith("scored:\nmodel")
    png = tmp_path / "cmp.png"
    result = runner.invoke(cli, ["--db", db, "compare", "m1", "m2", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.db"
    result = runner.invoke(cli, ["--db", str(empty), "compare"])  # compare only reads: none is created
    assert result.exit_code == 2 and f"no database at {empty}" in result.output and not empty.exists()
    from tapir.store import open_store

    open_store(empty).close()
    result = runner.invoke(cli, ["--db", str(empty), "compare"])
    assert result.exit_code == 1 and "nothing to compare" in result.output


@pytest.mark.parametrize("args, message", [
    (["--plot", "{tmp}/nodir/p.png"], "--plot {tmp}/nodir/p.png: no folder {tmp}/nodir; create it first"),
    (["--plot", "{tmp}/cmp.db"], "--plot {tmp}/cmp.db: give an image file name ending in .png, .pdf or .svg"),
    (["--base", "=m1"], "--base '=m1': give BASE (for every model) or MODEL=BASE, both names non-empty"),
    (["--base", "m2="], "--base 'm2=': give BASE (for every model) or MODEL=BASE, both names non-empty"),
])
def test_cli_compare_bad_plot_path_or_base_exits_2_before_the_table(cli, scored, tmp_path, args, message):
    """A --plot path in a missing folder or with no image suffix failed
    after the table was printed (exit 1, FileNotFoundError / ValueError);
    '--base =m1' was ignored and '--base m2=' made the working directory
    a base model."""
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "bench", "scored", "-m", "m1"]).exit_code == 0
    before = (tmp_path / "cli.db").read_bytes()
    result = runner.invoke(cli, ["--db", db, "compare", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    assert (tmp_path / "cli.db").read_bytes() == before and not (tmp_path / "nodir").exists()
