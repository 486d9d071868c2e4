"""run_benchmark, suites, the comparison table and the bench/compare CLI,
with a fake evaluator (no model)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tapir import hookimpl
from tapir.bench import (bench_run_id, is_done, load_suite, run_benchmark, run_suite, stored_rows,
                         upsert_rows)
from tapir.errors import TapirError
from tapir.runs import Run


class FakeEvaluator:
    """Scores ``options['score']`` on task t1 and half of it on t2; counts calls."""

    name = "fake"
    calls: list[tuple[str, str, dict]] = []

    def __init__(self, **options):
        self.options = options

    def run(self, model, store, *, run_id, **options):
        FakeEvaluator.calls.append((model, run_id, options))
        if options.get("fail"):
            raise RuntimeError("boom")
        score = float(options.get("score", 1.0))
        return [
            {"task": "t1", "metric": "acc", "value": score, "stderr": 0.1, "n": 10, "meta": {"k": 1}},
            {"task": "t2", "metric": "acc", "value": score / 2, "stderr": None, "n": 5},
        ]


class FakePlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("fake", FakeEvaluator, description="a fake benchmark")
        register("fake2", FakeEvaluator, description="another fake benchmark")


@pytest.fixture
def fake(register_plugin):
    FakeEvaluator.calls = []
    register_plugin(FakePlugin(), "test-fake-bench")
    return FakeEvaluator


def _count(store):
    return store["benchmark_results"].count


# --- run_benchmark ------------------------------------------------------------


def test_run_benchmark_stores_rows_once(store, fake):
    rows = run_benchmark(store, "fake", "m1", {"score": 0.8})
    run_id = bench_run_id("fake", "m1", {"score": 0.8})
    assert [(r["task"], r["metric"], r["value"], r["stderr"], r["n"]) for r in rows] == [
        ("t1", "acc", 0.8, 0.1, 10), ("t2", "acc", 0.4, None, 5)]
    assert all(r["run_id"] == run_id and r["meta"]["run_id"] == run_id for r in rows)
    assert rows[0]["meta"]["k"] == 1
    assert len(fake.calls) == 1 and fake.calls[0] == ("m1", run_id, {"score": 0.8})
    run = store["runs"].get(run_id)
    assert run["status"] == "done" and run["name"] == "bench:fake:m1"
    assert json.loads(run["config"]) == {"benchmark": "fake", "model": "m1", "options": {"score": 0.8}}
    assert is_done(store, "fake", "m1", {"score": 0.8})

    again = run_benchmark(store, "fake", "m1", {"score": 0.8})
    assert len(fake.calls) == 1  # not called again
    assert again == rows and _count(store) == 2
    assert store["runs"].get(run_id)["status"] == "done"

    run_benchmark(store, "fake", "m1", {"score": 0.8}, force=True)
    assert len(fake.calls) == 2 and _count(store) == 2  # forced: ran, no duplicate rows

    # Other options: a new run whose rows replace the model's rows for the same task/metric.
    other = run_benchmark(store, "fake", "m1", {"score": 0.6})
    assert len(fake.calls) == 3 and _count(store) == 2
    assert [r["value"] for r in stored_rows(store, model="m1")] == [0.6, 0.3]
    assert {r["run_id"] for r in other} == {bench_run_id("fake", "m1", {"score": 0.6})}
    # ...and the first config, whose rows were replaced, runs again when asked.
    run_benchmark(store, "fake", "m1", {"score": 0.8})
    assert len(fake.calls) == 4


def test_failed_run_is_marked_and_retried(store, fake):
    with pytest.raises(RuntimeError, match="boom"):
        run_benchmark(store, "fake", "m1", {"fail": True})
    run_id = bench_run_id("fake", "m1", {"fail": True})
    assert store["runs"].get(run_id)["status"] == "failed"
    assert store["stages"].get(1)["status"] == "failed"
    assert not is_done(store, "fake", "m1", {"fail": True}) and _count(store) == 0


def test_unknown_benchmark_lists_available(store, fake):
    with pytest.raises(TapirError, match=r"unknown evaluator 'nope'.*fake, fake2"):
        run_benchmark(store, "nope", "m1", {})


def test_local_paths_are_one_model(store, fake, tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    run_benchmark(store, "fake", "./ckpt", {})
    run_benchmark(store, "fake", str(folder), {})
    assert len(fake.calls) == 1
    assert {r["model"] for r in stored_rows(store)} == {str(folder.resolve())}


# --- suites -------------------------------------------------------------------


def test_suite_file_skips_done_pairs(store, fake, tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text("- benchmark: fake\n  options: {score: 0.5}\n- benchmark: fake2\n")
    suite = load_suite(str(suite_file))
    assert [(e.benchmark, e.options) for e in suite] == [("fake", {"score": 0.5}), ("fake2", {})]
    run_benchmark(store, "fake", "m2", {"score": 0.5})
    fake.calls.clear()
    seen = []
    results = run_suite(store, suite, ["m1", "m2"],
                        on_progress=lambda i, n, r, b, m: seen.append((i, n, r and r.status, b, m)))
    assert [(r.benchmark, r.model, r.status, len(r.rows)) for r in results] == [
        ("fake", "m1", "ran", 2), ("fake2", "m1", "ran", 2), ("fake", "m2", "skipped", 2), ("fake2", "m2", "ran", 2)]
    assert [c[0] for c in fake.calls] == ["m1", "m1", "m2"]
    assert seen[:2] == [(1, 4, None, "fake", "m1"), (1, 4, "ran", "fake", "m1")]
    again = run_suite(store, suite, ["m1", "m2"])
    assert [r.status for r in again] == ["skipped"] * 4 and len(fake.calls) == 3
    assert _count(store) == 8


def test_suite_failure_does_not_stop_the_rest(store, fake):
    from tapir.bench import SuiteEntry

    results = run_suite(store, [SuiteEntry("fake", {"fail": True}), SuiteEntry("fake2")], ["m1"])
    assert [(r.status, r.error) for r in results] == [("failed", "RuntimeError: boom"), ("ran", None)]


def test_suite_errors(tmp_path, fake, store):
    from tapir.bench import SuiteEntry

    with pytest.raises(TapirError, match="unknown suite 'nope'.*leaderboard-v1.*quick"):
        load_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- benchmark: fake\n  option: {}\n")
    with pytest.raises(TapirError, match="entry 1 has unknown key"):
        load_suite(str(bad))
    with pytest.raises(TapirError, match="unknown evaluator 'nope'"):
        run_suite(store, [SuiteEntry("fake"), SuiteEntry("nope")], ["m1"])
    assert fake.calls == []  # nothing ran
    assert [e.options for e in load_suite("leaderboard-v1")] == [{"preset": "leaderboard-v1"}]


# --- compare ------------------------------------------------------------------


def _compare_store(store):
    run = Run.start(store, {"distill": "demo"}, name="distill")
    for rnd in (1, 2):
        store["checkpoints"].insert({"run_id": run.id, "round": rnd, "path": f"/ck/a{rnd}", "base_model": "base-a",
                                     "trainer": "fake"})

    def put(bench, model, task, metric, value, primary=None):
        meta = {} if primary is None else {"primary": primary}
        upsert_rows(store, bench, model, "r", [{"task": task, "metric": metric, "value": value, "meta": meta}])

    put("mtbench", "base-a", "overall", "score", 5.0)
    put("lmeval", "base-a", "arc_challenge", "acc_norm", 0.30, primary=True)
    put("lmeval", "base-a", "arc_challenge", "acc", 0.28, primary=False)
    put("mtbench", "/ck/a1", "overall", "score", 5.5)
    put("mtbench", "/ck/a1", "generation", "failures", 0.0)
    put("lmeval", "/ck/a1", "arc_challenge", "acc_norm", 0.32, primary=True)
    put("mtbench", "/ck/a2", "overall", "score", 6.25)
    put("mtbench", "base-b", "overall", "score", 4.0)
    put("mtbench", "student-b", "overall", "score", 4.5)
    put("lmeval", "student-b", "arc_challenge", "acc_norm", 0.25, primary=True)
    put("alpacaeval", "other", "alpaca_eval", "win_rate", 10.0)
    return run.id


COLS = "mtbench/overall/score | alpacaeval/alpaca_eval/win_rate | lmeval/arc_challenge/acc_norm"


def test_compare_markdown(store):
    from tapir.compare import build, render

    run_id = _compare_store(store)
    table = build(store, [run_id, "student-b", "other"], ["student-b=base-b"])
    expected = f"""## Scores

| model | base | run | round | {COLS} |
|---|---|---|---|---:|---:|---:|
| base-a | (base) |  |  | 5.000 |  | 0.300 |
| /ck/a1 | base-a | {run_id} | 1 | 5.500 |  | 0.320 |
| /ck/a2 | base-a | {run_id} | 2 | 6.250 |  |  |
| base-b | (base) |  |  | 4.000 |  |  |
| student-b | base-b |  |  | 4.500 |  | 0.250 |
| other |  |  |  |  | 10.000 |  |

## Delta vs base

| model | base | run | round | {COLS} |
|---|---|---|---|---:|---:|---:|
| /ck/a1 | base-a | {run_id} | 1 | +0.500 |  | +0.020 |
| /ck/a2 | base-a | {run_id} | 2 | +1.250 |  |  |
| student-b | base-b |  |  | +0.500 |  |  |
"""
    assert render(table, "markdown") == expected


def test_compare_csv_and_json(store):
    from tapir.compare import build, render

    run_id = _compare_store(store)
    table = build(store, ["/ck/a2", "student-b"], ["base-b"])
    cols = ["mtbench/overall/score", "lmeval/arc_challenge/acc_norm"]
    assert render(table, "csv") == (
        "model,base,run,round," + ",".join(cols) + "," + ",".join(f"delta {c}" for c in cols) + "\n"
        "base-a,(base),,,5.0,0.3,,\n"
        f"/ck/a2,base-a,{run_id},2,6.25,,1.25,\n"
        "base-b,(base),,,4.0,,,\n"
        "student-b,base-b,,,4.5,0.25,0.5,\n"
    )
    data = json.loads(render(table, "json"))
    assert data["columns"] == cols
    assert [(r["model"], r["base"], r["is_base"], r["round"]) for r in data["rows"]] == [
        ("base-a", None, True, None), ("/ck/a2", "base-a", False, 2), ("base-b", None, True, None),
        ("student-b", "base-b", False, None)]
    assert data["rows"][1]["scores"] == {cols[0]: 6.25, cols[1]: None}
    assert data["rows"][1]["delta"] == {cols[0]: 1.25, cols[1]: None}
    assert data["rows"][3]["delta"] == {cols[0]: 0.5, cols[1]: None}  # base-b has no ARC score
    assert "delta" not in data["rows"][0]
    # Every metric, and no delta view.
    full = build(store, ["base-a"], all_metrics=True)
    assert full.columns == ["mtbench/overall/score", "lmeval/arc_challenge/acc_norm", "lmeval/arc_challenge/acc"]
    assert render(full, "csv", delta=False).splitlines()[1] == "base-a,,,,5.0,0.3,0.28"


def test_compare_all_models_by_default(store):
    from tapir.compare import build

    _compare_store(store)
    table = build(store)
    assert [(r.label, r.is_base) for r in table.rows] == [
        ("base-a", True), ("/ck/a1", False), ("/ck/a2", False), ("base-b", False), ("student-b", False),
        ("other", False)]
    assert build(store, benchmarks=["alpacaeval"]).columns == ["alpacaeval/alpaca_eval/win_rate"]
    with pytest.raises(TapirError, match="one plain --base"):
        build(store, [], ["x", "y"])


# --- the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from tapir.cli import _add_commands, cli

    _add_commands()
    return cli


def test_cli_bench_run_list_suite_compare(cli, fake, tmp_path):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "bench", "fake", "--model", "m1", "-o", "score=0.5"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "task  metric   value  stderr   n",
        "t1    acc     0.5000  0.1000  10",
        "t2    acc     0.2500           5",
    ]
    assert fake.calls[0][2] == {"score": 0.5}  # YAML-parsed value
    result = runner.invoke(cli, ["--db", db, "bench", "run", "fake", "-m", "m1", "-o", "score=0.5", "--json"])
    assert result.exit_code == 0 and len(fake.calls) == 1
    assert "already in the store" in result.output
    assert [r["value"] for r in json.loads(result.output[result.output.index("["):])] == [0.5, 0.25]

    result = runner.invoke(cli, ["bench", "list"])
    assert result.exit_code == 0
    assert any(line.split()[:1] == ["fake"] and "a fake benchmark" in line for line in result.output.splitlines())
    assert "leaderboard-v1" in result.output

    suite = tmp_path / "s.yaml"
    suite.write_text("benchmarks:\n  - benchmark: fake\n    options: {score: 0.5}\n")
    result = runner.invoke(cli, ["--db", db, "bench", "suite", str(suite), "--model", "m1", "--model", "m2"])
    assert result.exit_code == 0, result.output
    assert "[1/2] fake on m1 ..." in result.output and "skipped: already in the store (2 rows)" in result.output
    assert result.output.splitlines()[-1] == "1 ran, 1 skipped, 0 failed"

    result = runner.invoke(cli, ["--db", db, "compare", "--format", "csv", "--base", "m1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "model,base,run,round,fake/t1/acc,fake/t2/acc,delta fake/t1/acc,delta fake/t2/acc",
        "m1,(base),,,0.5,0.25,,",
        "m2,m1,,,0.5,0.25,0.0,0.0",
    ]
    png = tmp_path / "cmp.png"
    result = runner.invoke(cli, ["--db", db, "compare", "m1", "m2", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors(cli, fake, tmp_path):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "bench", "nope", "--model", "m1"])
    assert result.exit_code == 1 and "unknown evaluator 'nope'. Available:" in result.output
    result = runner.invoke(cli, ["--db", db, "bench", "fake", "--model", "m1", "-o", "novalue"])
    assert result.exit_code == 1 and "not KEY=VALUE" in result.output
    result = runner.invoke(cli, ["--db", db, "bench", "suite", "quick", "--model", "m1", "-o", "fail=true"])
    assert result.exit_code == 1
    result = runner.invoke(cli, ["--db", db, "compare"])
    assert result.exit_code == 1 and "nothing to compare" in result.output
