"""run_benchmark, suites and the bench CLI with small fake evaluators (no model):
preflight before any row, failure thresholds, re-runs that retry only the
failures, --force, subsets. The comparison table is in test_compare.py."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from tapir import hookimpl
from tapir.bench import (BenchFailed, PreflightFailed, bench_run_id, is_done, load_suite, run_benchmark,
                         run_suite, stored_rows)
from tapir.cache import CachedBackend
from tapir.errors import ConfigError, TapirError
from tapir.options import Options, option
from tapir.roles import Completion, GenerationRequest

from fakes import ScriptedBackend


class FakeEvaluator:
    """Scores ``score`` on task t1 and half of it on t2 (t1 only with a
    ``limit``); counts its runs."""

    name = "fake"
    calls: list[tuple[str, str, dict, bool]] = []

    class Options(Options):
        score: float = option(1.0, "the t1 score")
        fail: bool = option(False, "raise in run")
        limit: int | None = option(None, "a subset", gt=0)
        batch_size: int = option(1, "does not change scores")
        rows: list[dict] | None = option(None, "return exactly these rows")

    def __init__(self, options: "FakeEvaluator.Options"):
        self.options = options

    def preflight(self, model):
        return ["model 'nosuch-model': unknown model"] if model == "nosuch-model" else []

    def run(self, model, store, *, run_id, force=False):
        o = self.options
        FakeEvaluator.calls.append((model, run_id, o.model_dump(exclude_defaults=True), force))
        if o.fail:
            raise RuntimeError("boom")
        if o.rows is not None:
            return [dict(r) for r in o.rows]
        meta = {"judge": None, "judge_mode": "reference", "failures": 0, "failure_reasons": {},
                "failure_example": None, "data_version": "v1", "subset": f"limit={o.limit}" if o.limit else None}
        rows = [{"task": "t1", "metric": "acc", "value": o.score, "stderr": 0.1, "n": 10, "meta": {**meta, "k": 1}}]
        if not o.limit:
            rows.append({"task": "t2", "metric": "acc", "value": o.score / 2, "stderr": None, "n": 5, "meta": meta})
        return rows


class JudgedEvaluator:
    """A judged benchmark in miniature: one judge call per item through the
    LLM-call cache; judgments kept in the store; a failed judgment is never
    stored, so a re-run asks only for the failures."""

    name = "judged"
    broken: set[int] = set()  # items whose judge call fails
    judge = None  # the ScriptedBackend (counts requests)

    class Options(Options):
        items: int = option(6, "items", ge=1)
        limit: int | None = option(None, "only the first N items", gt=0)
        needs_key: bool = option(False, "the judge needs FAKE_BENCH_KEY")

    def __init__(self, options: "JudgedEvaluator.Options"):
        self.options = options

    def preflight(self, model):
        if self.options.needs_key and not os.environ.get("FAKE_BENCH_KEY"):
            return ["judge 'fake/judge': environment variable FAKE_BENCH_KEY is not set (export FAKE_BENCH_KEY=...)"]
        return []

    def run(self, model, store, *, run_id, force=False):
        backend = CachedBackend(JudgedEvaluator.judge, store, run_id, refresh=force)
        n = min(self.options.items, self.options.limit or self.options.items)
        have = {r["item_id"] for r in store["judgments"].rows_where("scope = ?", [run_id])}
        todo = [i for i in range(n) if f"q{i}" not in have]
        out = backend.generate([GenerationRequest([{"role": "user", "content": f"judge {model} on q{i}"}])
                                for i in todo])
        reasons: dict[str, int] = {}
        example = None
        with store.db.conn:
            for i, completion in zip(todo, out):
                if completion.ok:
                    store["judgments"].insert({"scope": run_id, "item_id": f"q{i}", "judge": "fake", "kind": "single",
                                               "position": "a", "round": 1, "score_a": float(completion.text),
                                               "raw": completion.text})
                else:
                    reasons[completion.error] = reasons.get(completion.error, 0) + 1
                    example = example or f"q{i}: {completion.error}"
        scores = [r["score_a"] for r in store["judgments"].rows_where("scope = ?", [run_id])]
        failures = n - len(scores)
        meta = {"judge": "fake/judge", "judge_mode": "reference", "failures": failures, "failure_reasons": reasons,
                "failure_example": example, "data_version": "sha256:abc",
                "subset": f"limit={self.options.limit}" if self.options.limit else None}
        return [{"task": "overall", "metric": "score", "value": sum(scores) / len(scores) if scores else None,
                 "stderr": None, "n": len(scores), "meta": meta}]


def _judge_reply(messages):
    item = int(messages[-1]["content"].rsplit("q", 1)[1])
    if item in JudgedEvaluator.broken:
        return Completion(error="AuthenticationError: no API key for fake/judge")
    return str(5 + item % 3)


class FakePlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("fake", FakeEvaluator, description="a fake benchmark")
        register("fake2", FakeEvaluator, description="another fake benchmark")
        register("judged", JudgedEvaluator, description="a fake judged benchmark")


@pytest.fixture
def fake(register_plugin, monkeypatch):
    FakeEvaluator.calls = []
    JudgedEvaluator.broken = set()
    JudgedEvaluator.judge = ScriptedBackend(_judge_reply, model_id="fake/judge")
    monkeypatch.delenv("FAKE_BENCH_KEY", raising=False)
    monkeypatch.setenv("TAPIR_QUIET", "1")
    register_plugin(FakePlugin(), "test-fake-bench")
    return FakeEvaluator


def _count(store):
    return store["benchmark_results"].count


def _requests():
    return len(JudgedEvaluator.judge.requests)


# --- run_benchmark ------------------------------------------------------------


def test_run_benchmark_stores_rows_once_per_run(store, fake):
    rows = run_benchmark(store, "fake", "m1", {"score": 0.8})
    run_id = bench_run_id("fake", "m1", {"score": 0.8})
    assert [(r["task"], r["metric"], r["value"], r["stderr"], r["n"]) for r in rows] == [
        ("t1", "acc", 0.8, 0.1, 10), ("t2", "acc", 0.4, None, 5)]
    assert all(r["run_id"] == run_id and r["meta"]["run_id"] == run_id for r in rows)
    assert rows[0]["meta"]["k"] == 1 and "run_failed" not in rows[0]["meta"]
    assert fake.calls == [("m1", run_id, {"score": 0.8}, False)]
    run = store["runs"].get(run_id)
    assert run["status"] == "done" and run["name"] == "bench:fake:m1"
    assert json.loads(run["config"]) == {"benchmark": "fake", "model": "m1", "options": {"score": 0.8}}
    assert is_done(store, "fake", "m1", {"score": 0.8})

    again = run_benchmark(store, "fake", "m1", {"score": 0.8})
    assert len(fake.calls) == 1  # not called again
    assert again == rows and _count(store) == 2

    run_benchmark(store, "fake", "m1", {"score": 0.8}, force=True)
    assert len(fake.calls) == 2 and fake.calls[1][3] is True  # forced: the evaluator is told
    assert _count(store) == 2  # no duplicate rows

    # Other options: another run, whose rows sit beside the first run's (never replace them).
    other = run_benchmark(store, "fake", "m1", {"score": 0.6})
    assert len(fake.calls) == 3 and _count(store) == 4
    assert {r["run_id"] for r in other} == {bench_run_id("fake", "m1", {"score": 0.6})}
    assert [r["value"] for r in stored_rows(store, run_id=run_id)] == [0.8, 0.4]
    run_benchmark(store, "fake", "m1", {"score": 0.8})
    assert len(fake.calls) == 3  # the first run is still done


def test_failed_run_is_marked_and_retried(store, fake):
    with pytest.raises(RuntimeError, match="boom"):
        run_benchmark(store, "fake", "m1", {"fail": True})
    run_id = bench_run_id("fake", "m1", {"fail": True})
    assert store["runs"].get(run_id)["status"] == "failed"
    assert store["stages"].get(1)["status"] == "failed"
    assert not is_done(store, "fake", "m1", {"fail": True}) and _count(store) == 0


def test_unknown_benchmark_lists_available(store, fake):
    with pytest.raises(TapirError, match=r"unknown evaluator 'nope'.*fake, fake2, judged"):
        run_benchmark(store, "nope", "m1", {})


def test_bad_options_and_models_are_refused_before_a_run_row(store, fake):
    with pytest.raises(ConfigError, match=r"unknown option 'scor'. Did you mean 'score'\?"):
        run_benchmark(store, "fake", "m1", {"scor": 1})
    with pytest.raises(ConfigError, match=r"option 'limit': Input should be greater than 0"):
        run_benchmark(store, "fake", "m1", {"limit": 0})
    with pytest.raises(PreflightFailed, match="nothing was run or written:\n  model 'nosuch-model': unknown"):
        run_benchmark(store, "fake", "nosuch-model", {})
    with pytest.raises(ConfigError, match="max_failure_rate must be between 0 and 1"):
        run_benchmark(store, "fake", "m1", {}, max_failure_rate=2)
    assert store["runs"].count == 0 and fake.calls == []


def test_local_paths_are_one_model(store, fake, tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    run_benchmark(store, "fake", "./ckpt", {})
    run_benchmark(store, "fake", str(folder), {})
    assert len(fake.calls) == 1
    assert {r["model"] for r in stored_rows(store)} == {str(folder.resolve())}


def test_failures_fail_the_run_rows_flagged_rerun_retries_only_failures(store, fake):
    JudgedEvaluator.broken = {1, 3}
    with pytest.raises(BenchFailed) as info:
        run_benchmark(store, "judged", "m1", {})
    message = str(info.value)
    assert message.splitlines()[0].startswith("judged on m1: 2 of 6 items could not be scored (33.3%, allowed 0.0%)")
    assert "  2 x AuthenticationError: no API key for fake/judge" in message
    assert "Example: q1: AuthenticationError: no API key for fake/judge" in message
    assert message.splitlines()[-1].startswith("Fix, then re-run: the calls that failed (API errors, timeouts) are "
                                               "sent again; replies that came but could not be scored are read "
                                               "again from the cache")
    run_id = bench_run_id("judged", "m1", {})
    assert store["runs"].get(run_id)["status"] == "failed"
    stage = list(store["stages"].rows_where("run_id = ?", [run_id]))[0]
    assert stage["status"] == "failed" and json.loads(stage["info"])["failures"] == 2
    [row] = stored_rows(store, run_id=run_id)
    assert row["meta"]["run_failed"] is True and row["meta"]["failures"] == 2 and row["n"] == 4
    assert _requests() == 6

    JudgedEvaluator.broken = set()  # fixed
    [row] = run_benchmark(store, "judged", "m1", {})
    assert _requests() == 8  # only the two failures were asked again
    assert store["runs"].get(run_id)["status"] == "done"
    assert row["n"] == 6 and row["meta"]["failures"] == 0 and "run_failed" not in row["meta"]
    assert row["value"] == pytest.approx((5 + 6 + 7 + 5 + 6 + 7) / 6)


def test_force_deletes_stored_judgments_and_bypasses_the_cache(store, fake):
    run_benchmark(store, "judged", "m1", {})
    run_id = bench_run_id("judged", "m1", {})
    calls_before = store["llm_calls"].count
    assert _requests() == 6 and calls_before == 6
    run_benchmark(store, "judged", "m1", {})
    assert _requests() == 6  # done: nothing asked
    run_benchmark(store, "judged", "m1", {}, force=True)
    assert _requests() == 12  # every judgment asked again, none served from the cache
    assert store["llm_calls"].count == 12  # and recorded
    assert store["judgments"].count_where("scope = ?", [run_id]) == 6
    stage = list(store["stages"].rows_where("run_id = ?", [run_id]))[0]
    assert json.loads(stage["info"])["forced_deleted"]["judgments"] == 6


def test_max_failure_rate_allows_some_failures(store, fake):
    JudgedEvaluator.broken = {2}
    [row] = run_benchmark(store, "judged", "m1", {}, max_failure_rate=0.2)  # 1/6 = 16.7%
    assert row["meta"]["failures"] == 1 and "run_failed" not in row["meta"]
    assert store["runs"].get(bench_run_id("judged", "m1", {}))["status"] == "done"
    # Done with an allowed failure: a later run does not repeat it ...
    run_benchmark(store, "judged", "m1", {})
    assert _requests() == 6
    # ... but a stricter threshold on a new run fails it.
    with pytest.raises(BenchFailed, match="1 of 3 items"):
        run_benchmark(store, "judged", "m1", {"limit": 3}, max_failure_rate=0.3)


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

    JudgedEvaluator.broken = {0}
    results = run_suite(store, [SuiteEntry("fake", {"fail": True}), SuiteEntry("judged"), SuiteEntry("fake2")],
                        ["m1"])
    assert [(r.status, (r.error or "").splitlines()[:1]) for r in results] == [
        ("failed", ["RuntimeError: boom"]),
        ("failed", ["judged on m1: 1 of 6 items could not be scored (16.7%, allowed 0.0%); the run is marked "
                    "failed and its rows are flagged."]),
        ("ran", [])]
    assert results[1].rows[0]["meta"]["run_failed"] is True


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
    with pytest.raises(PreflightFailed, match="unknown option 'scor'"):
        run_suite(store, [SuiteEntry("fake"), SuiteEntry("fake2", {"scor": 1})], ["m1"])
    assert fake.calls == [] and store["runs"].count == 0  # nothing ran
    assert [e.options for e in load_suite("leaderboard-v1")] == [{"preset": "leaderboard-v1"}]


# --- the CLI ------------------------------------------------------------------


def test_cli_bench_run_list_suite(cli, fake, tmp_path):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "bench", "fake", "--model", "m1", "-o", "score=0.5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "task  metric   value  stderr   n  failures",
        "t1    acc     0.5000  0.1000  10         0",
        "t2    acc     0.2500           5         0",
    ]
    run_id = bench_run_id("fake", "m1", {"score": 0.5})
    assert result.stderr.splitlines()[-1] == f"run {run_id}: judge - (reference), subset full, data v1"
    assert fake.calls[0][2] == {"score": 0.5}  # YAML-parsed value
    result = runner.invoke(cli, ["--db", db, "bench", "run", "fake", "-m", "m1", "-o", "score=0.5", "--json"])
    assert result.exit_code == 0 and len(fake.calls) == 1
    assert "already in the store" in result.stderr
    assert [r["value"] for r in json.loads(result.stdout)] == [0.5, 0.25]

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


def test_cli_no_api_key_exits_2_and_writes_nothing(cli, fake, tmp_path):
    runner = CliRunner()
    fresh = tmp_path / "fresh.db"
    result = runner.invoke(cli, ["--db", str(fresh), "bench", "judged", "-m", "m1", "-o", "needs_key=true"])
    assert result.exit_code == 2
    assert "environment variable FAKE_BENCH_KEY is not set" in result.stderr
    assert not fresh.exists()  # not even created

    db = tmp_path / "cli.db"
    assert runner.invoke(cli, ["--db", str(db), "bench", "fake", "-m", "m1"]).exit_code == 0
    before = db.read_bytes()
    result = runner.invoke(cli, ["--db", str(db), "bench", "judged", "-m", "m1", "-o", "needs_key=true"])
    assert result.exit_code == 2 and "FAKE_BENCH_KEY" in result.stderr
    result = runner.invoke(cli, ["--db", str(db), "bench", "fake", "-m", "m1", "-o", "scor=2"])
    assert result.exit_code == 2 and "unknown option 'scor'. Did you mean 'score'?" in result.stderr
    assert db.read_bytes() == before  # byte-identical: no run row, no stage, no call
    assert _requests() == 0


def test_cli_judge_failures_exit_1_then_fixed_rerun(cli, fake, tmp_path):
    from tapir.store import open_store

    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    JudgedEvaluator.broken = {1, 3}
    result = runner.invoke(cli, ["--db", db, "bench", "judged", "-m", "m1"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["task     metric   value  stderr  n  failures",
                                          "overall  score   6.2500          4         2"]
    assert result.stderr.splitlines() == [
        "Error: judged on m1: 2 of 6 items could not be scored (33.3%, allowed 0.0%); "
        "the run is marked failed and its rows are flagged.",
        "Most common reasons:",
        "  2 x AuthenticationError: no API key for fake/judge",
        "Example: q1: AuthenticationError: no API key for fake/judge",
        "Fix, then re-run: the calls that failed (API errors, timeouts) are sent again; replies that came but "
        "could not be scored are read again from the cache and fail the same way until the judge, its options or "
        "its server change (--force asks everything again).",
    ]
    store = open_store(db)
    assert store["runs"].get(bench_run_id("judged", "m1", {}))["status"] == "failed"
    store.close()
    # Allowing a third of the items to fail: the same run passes, nothing asked again.
    result = runner.invoke(cli, ["--db", db, "bench", "judged", "-m", "m1", "--max-failure-rate", "0.34"])
    assert result.exit_code == 0, result.output
    assert _requests() == 8  # the two failures were retried (still failing)
    JudgedEvaluator.broken = set()
    result = runner.invoke(cli, ["--db", db, "bench", "judged", "-m", "m1", "--force"])
    assert result.exit_code == 0 and _requests() == 14  # forced: all six again
    assert result.stdout.splitlines()[1] == "overall  score   6.0000          6         0"


def test_cli_suite_mistakes_exit_2_before_the_database_is_created(cli, fake, tmp_path):
    """A suite's unknown benchmark, a key given twice in its file, or a
    model no pair can run (on a new database) were found after the database
    was created (exit 1), or not at all (YAML kept the last key)."""
    runner = CliRunner()
    fresh = tmp_path / "fresh.db"
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("- benchmark: fake\n- benchmark: nosuch\n")
    twice = tmp_path / "twice.yaml"
    twice.write_text("- benchmark: fake\n  benchmark: fake2\n")
    good = tmp_path / "good.yaml"
    good.write_text("- benchmark: fake\n")
    cases = [
        ([str(unknown), "-m", "m1"], "unknown evaluator 'nosuch'. Available: "),
        ([str(twice), "-m", "m1"], f"{twice} line 2: duplicate key '[0].benchmark' (first given at line 1)"),
        ([str(good), "-m", "m1", "-m", "nosuch-model"],
         "fake on nosuch-model: nothing was run or written:\n  model 'nosuch-model': unknown model"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["--db", str(fresh), "bench", "suite", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
        assert not fresh.exists(), args
    assert fake.calls == []


def test_cli_bench_run_unknown_name_exits_2(cli, fake, tmp_path):
    """An unknown benchmark is a command-line mistake (exit 2, as the
    module says), not a failed run (exit 1)."""
    fresh = tmp_path / "fresh.db"
    result = CliRunner().invoke(cli, ["--db", str(fresh), "bench", "run", "nosuch", "-m", "m1"])
    assert result.exit_code == 2 and "unknown evaluator 'nosuch'. Available: " in result.stderr
    assert not fresh.exists() and fake.calls == []
