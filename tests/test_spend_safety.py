"""Spend safety (issue 20): failures classified by what helps, a permanent
one stopping the stage at once, the circuit breaker, every attempt recorded,
and requests-/tokens-per-minute limits; against local OpenAI-compatible
servers answering with OpenAI's own error bodies."""

from __future__ import annotations

import json
import re
import time

import pytest
import sqlite_utils
import yaml
from pipeline_helpers import api_config, server_reply
from tapir_testing.openai_server import Faults, OpenAIServer

from tapir.errors import PermanentFailure
from tapir.pipeline.engine import StageFailed, StageStopped
from tapir.roles import GenerationParams, GenerationRequest


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.setenv("TAPIR_TEST_KEY", "sk-test-not-a-real-key-000000")


def requests(n: int, max_new_tokens: int = 8) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"question {i}"}], GenerationParams(max_new_tokens=max_new_tokens))
            for i in range(n)]


def backend(srv: OpenAIServer, **options):
    from tapir_litellm.backend import LiteLLMBackend

    defaults = {"api_base": srv.base_url, "concurrency": 4, "max_retries": 5, "retry_base_seconds": 0.2,
                "timeout": 10.0}
    return LiteLLMBackend("openai/m", LiteLLMBackend.Options(**{**defaults, **options}))


# -- the classification -------------------------------------------------------


@pytest.mark.parametrize("status, code, message, kind, cause", [
    (429, "insufficient_quota", "You exceeded your current quota, please check your plan and billing details.",
     "permanent", "quota"),
    (429, "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 500.",
     "transient", "rate_limit"),
    (429, None, "Quota exceeded for quota metric 'Generate Content API requests per minute'", "transient",
     "rate_limit"),
    (402, None, "Payment required", "permanent", "quota"),
    (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.", "permanent",
     "quota"),
    (401, "invalid_api_key", "Incorrect API key provided", "permanent", "auth"),
    (403, None, "Project does not have access to model", "permanent", "forbidden"),
    (404, "model_not_found", "The model `gpt-5-mini-typo` does not exist", "permanent", "model_not_found"),
    (400, "context_length_exceeded", "This model's maximum context length is 4096 tokens.", "permanent",
     "context_length"),
    (400, None, "Invalid value for 'temperature'", "content", "bad_request"),
    (500, None, "internal error", "transient", "server"),
    (503, None, "overloaded", "transient", "server"),
    # FastChat's openai_api_server: HTTP 400 for every error, its own code in the body
    (400, "40301", "Only vicuna-7b allowed now, your model gpt-4", "permanent", "model_not_found"),
    (400, "40303", "This model's maximum context length is 2048 tokens. However, your messages resulted in 2100 "
     "tokens. Please reduce the length of the messages.", "permanent", "context_length"),
    (400, "40302", "-1 is less than the minimum of 0 - 'temperature'", "content", "bad_request"),
    (400, "42903", "engine overloaded", "transient", "server"),
    (400, "50001", "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**", "transient",
     "server"),
    (400, "50002", "CUDA out of memory", "transient", "server"),
])
def test_failure_kind_says_what_helps(status, code, message, kind, cause):
    from tapir_litellm.direct import HTTPStatusError
    from tapir_litellm.retry import failure_of, is_retryable

    failure = failure_of(HTTPStatusError(status, f"HTTP {status}: {message}", code=code))
    assert (failure.kind, failure.cause, failure.status) == (kind, cause, status)
    assert is_retryable(HTTPStatusError(status, message, code=code)) is (kind == "transient")


def test_timeouts_connections_and_malformed_replies():
    import asyncio

    from tapir_litellm.direct import ServerUnreachable
    from tapir_litellm.retry import MalformedResponse, failure_of

    assert (failure_of(asyncio.TimeoutError()).kind, failure_of(asyncio.TimeoutError()).cause) == ("transient", "timeout")
    assert failure_of(ServerUnreachable("refused")).cause == "connection"
    malformed = failure_of(MalformedResponse("no choices"))
    assert (malformed.kind, malformed.cause, malformed.retryable) == ("content", "malformed", True)


# -- a permanent failure stops sending ---------------------------------------


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_quota_429_sends_a_handful_not_retries_times_items(transport):
    with OpenAIServer(faults=lambda i, body: "quota") as srv:
        be = backend(srv, transport=transport)
        if transport == "litellm":
            from tapir_litellm.library import import_litellm

            import_litellm()  # seconds on a busy machine: not what is measured
        delivered = []
        started = time.monotonic()
        with pytest.raises(PermanentFailure) as err:
            be.generate(requests(40), on_result=lambda i, c: delivered.append(c))
        # one attempt per slot in flight; before: 6 attempts x 40 items, ~23 s of backoff each
        assert srv.requests <= 4
        assert time.monotonic() - started < 5
    assert err.value.cause == "quota" and err.value.status == 429
    assert "out of quota or credit" in str(err.value) and "add credit or raise the quota" in str(err.value)
    assert all(c.failure_kind == "permanent" and c.failure_cause == "quota" for c in delivered)
    assert all(len(c.attempts) == 1 and c.attempts[0]["outcome"] == "quota" for c in delivered)


@pytest.mark.parametrize("fault, cause, fix", [
    ("401", "auth", "check the key"),
    ("model_not_found", "model_not_found", "check the model name"),
    ("context_length", "context_length", "shorten the prompts"),
])
def test_key_revoked_or_model_removed_after_the_first_calls(fault, cause, fix):
    with OpenAIServer(faults=lambda i, body: fault if i >= 3 else None) as srv:
        be = backend(srv)
        delivered = {}
        with pytest.raises(PermanentFailure) as err:
            be.generate(requests(40), on_result=lambda i, c: delivered.__setitem__(i, c))
        assert srv.requests <= 3 + 4
    assert err.value.cause == cause and fix in str(err.value)
    ok = [c for c in delivered.values() if c.ok]
    assert len(ok) >= 3  # the answers received before are delivered (and so recorded), not lost


def test_transient_failures_are_still_retried_and_every_attempt_kept():
    faults = Faults(pattern=["500", "429", None])
    faults.retry_after = 0
    with OpenAIServer(faults=faults) as srv:
        [c] = backend(srv, concurrency=1, retry_base_seconds=0.01).generate(requests(1))
    assert c.ok and srv.requests == 3
    assert [a["outcome"] for a in c.attempts] == ["server", "rate_limit", "ok"]
    assert [a["http_status"] for a in c.attempts] == [500, 429, None]


def test_timeout_is_per_attempt_and_a_timed_out_attempt_counts_as_maybe_billed():
    faults = Faults(pattern=["slow"], slow_seconds=3.0)
    with OpenAIServer(faults=faults) as srv:
        [c] = backend(srv, concurrency=1, timeout=1.0, retry_base_seconds=0.01).generate(requests(1))
    assert c.ok
    assert [(a["outcome"], a["billed"]) for a in c.attempts] == [("timeout", "maybe"), ("ok", "yes")]
    assert 0.9 < c.attempts[0]["seconds"] < 2.0
    assert c.latency_s < 1.0  # the successful attempt's own time, not the history's


# -- in the pipeline ----------------------------------------------------------


def distill(cfg, db, **kw):
    from tapir.pipeline.runner import distill as run

    return run(cfg, str(db), **kw)


def test_out_of_quota_stops_the_stage_at_once_and_heals_after_credit(tmp_path, tiny_model):
    state = {"quota": True}
    with OpenAIServer(reply=server_reply, faults=lambda i, b: "quota" if state["quota"] else None) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        db = tmp_path / "t.db"
        started = time.monotonic()
        with pytest.raises(StageStopped) as err:
            distill(cfg, db)
        assert time.monotonic() - started < 60
        message = str(err.value)
        assert message.startswith("stage teacher_answers stopped: the provider says the account is out of quota")
        assert "Fix: add credit or raise the quota" in message
        assert "re-run to retry" not in message and "only the failed items are retried" not in message
        assert srv.requests <= 4  # concurrency 4, max_retries 2, 8 items: 24 attempts before
        store = sqlite_utils.Database(db)
        assert store.execute("select status from runs").fetchone()[0] == "failed"
        stage = store.execute("select status, info from stages where name = 'teacher_answers'").fetchone()
        assert stage[0] == "failed" and "quota" in json.loads(stage[1])["error"]
        kinds = store.execute("select error_kind, http_status from outcomes where status = 'failed'").fetchall()
        assert kinds and set(kinds) == {("permanent/quota", 429)}
        calls = store.execute("select attempts, failure_kind, attempt_log from llm_calls").fetchall()
        assert calls and all(a == 1 and k == "permanent" and "quota" in log for a, k, log in calls)

        state["quota"] = False
        done = distill(cfg, db)
        assert all(r.failed == 0 for r in done.results)


def test_cli_exits_1_with_the_cause_and_the_fix(tmp_path, tiny_model):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli

    _add_commands()
    with OpenAIServer(reply=server_reply, faults=lambda i, b: "401" if i >= 2 else None) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "distill", str(cfg)])
        assert srv.requests <= 2 + 4
    assert result.exit_code == 1, result.output
    assert "stage teacher_answers stopped: the provider refused the API key (auth, HTTP 401)" in result.output
    assert "Fix: check the key" in result.output
    assert "sk-test-not-a-real-key" not in result.output


def test_circuit_breaker_stops_a_stage_failing_the_same_way(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply, faults=lambda i, b: "500") as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url, failures={"circuit_breaker": 3})
        api = yaml.safe_load(cfg.read_text())
        api["teacher"]["model"]["options"]["concurrency"] = 1
        cfg.write_text(yaml.safe_dump(api))
        with pytest.raises(StageStopped) as err:
            distill(cfg, tmp_path / "t.db")
        sent = srv.requests
        # Items back off concurrently (the slot limits only what is in flight), so more than
        # 3 x 3 attempts may have started; never all 8 x 3.
        assert 9 <= sent < 8 * 3
    message = str(err.value)
    assert "stage teacher_answers stopped: 3 calls in a row failed the same way (transient/server)" in message
    store = sqlite_utils.Database(tmp_path / "t.db")
    assert store.execute("select count(*) from outcomes where status = 'failed'").fetchone()[0] == 3
    # Every attempt the server saw is recorded: the three failed items' 3 each, and those of the
    # items waiting to retry when the stage stopped (sent nothing more, kept as failed calls).
    assert store.execute("select sum(attempts) from llm_calls").fetchone()[0] == sent
    stopped = store.execute("select error from llm_calls where error like 'not sent again%'").fetchall()
    assert all("the stage stopped" in e for (e,) in stopped)


def test_circuit_breaker_off_fails_item_by_item(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply, faults=lambda i, b: "500") as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url, failures={"circuit_breaker": 0})
        with pytest.raises(StageFailed) as err:
            distill(cfg, tmp_path / "t.db")
        assert not isinstance(err.value, StageStopped)
        assert "8 of 8 items failed" in str(err.value)


# -- the budget ---------------------------------------------------------------

PRICED = {"input_usd_per_million": 1000.0, "output_usd_per_million": 2000.0}


def priced_config(tmp_path, tiny_model, url, budget, role="teacher"):
    cfg = api_config(tmp_path, tiny_model, url, budget=budget)
    data = yaml.safe_load(cfg.read_text())
    data[role]["model"]["options"].update(PRICED)
    if role == "teacher":
        data[role]["model"]["generation"] = {"max_new_tokens": 100}  # at most $0.20 of answer a call
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_budget_stops_before_the_call_that_would_pass_it_and_resumes_when_raised(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply) as srv:
        db = tmp_path / "t.db"
        cfg = priced_config(tmp_path, tiny_model, srv.base_url, {"max_cost_usd": 0.5})
        with pytest.raises(StageStopped) as err:
            distill(cfg, db)
        message = str(err.value)
        assert message.startswith("stage teacher_answers stopped: the run's spend would pass its budget (budget)")
        assert "budget.max_cost_usd ($0.50" in message and "Fix: raise budget.max_cost_usd" in message
        store = sqlite_utils.Database(db)
        costs = [c for (c,) in store.execute("select cost from llm_calls where role = 'teacher'")]
        # Each call reserves up to ~$0.21 (prompt + 100 answer tokens): two fit in $0.50, the third would not.
        assert srv.requests == len(costs) == 2
        assert all(c and c > 0 for c in costs) and sum(costs) <= 0.5
        assert store.execute("select count(*) from outcomes where status = 'failed'").fetchone()[0] == 0
        sent = srv.requests

        data = yaml.safe_load(cfg.read_text())
        data["budget"]["max_cost_usd"] = 100.0
        cfg.write_text(yaml.safe_dump(data))
        done = distill(cfg, db)
        assert all(r.failed == 0 for r in done.results)
        assert store.execute("select count(*) from runs").fetchone()[0] == 1  # the same run, resumed
        teacher_calls = store.execute("select count(*) from llm_calls where role = 'teacher' and round = 0 "
                                      "and error is null").fetchone()[0]
        assert teacher_calls == 8 and srv.requests - sent >= 6  # the 2 paid answers were not asked again
        spent = store.execute("select sum(cost) from llm_calls").fetchone()[0]
        assert done.budget.total_spent() == pytest.approx(spent)
        assert done.budget.lines()[0] == f"spend ${spent:.4f} of budget $100.00"


def test_budget_per_role(tmp_path, tiny_model):
    with OpenAIServer(reply=server_reply) as srv:
        cfg = priced_config(tmp_path, tiny_model, srv.base_url, {"per_role": {"judge": 0.1}}, role="judge")
        with pytest.raises(StageStopped) as err:
            distill(cfg, tmp_path / "t.db")
    assert "stage judge stopped: the run's spend would pass its budget" in str(err.value)
    assert "budget.per_role.judge ($0.10" in str(err.value)
    store = sqlite_utils.Database(tmp_path / "t.db")
    assert store.execute("select count(*) from llm_calls where role = 'judge'").fetchone()[0] == 0
    assert store.execute("select count(*) from llm_calls where role = 'teacher'").fetchone()[0] == 8


def test_budget_unit_reserves_in_flight_calls():
    from tapir.budget import Budget, OverBudget

    b = Budget(1.0, {"judge": 0.3}, spent={"teacher": 0.5})
    b.reserve("teacher", 0.3)
    with pytest.raises(OverBudget):
        b.reserve("teacher", 0.3)  # 0.5 paid + 0.3 in flight + 0.3 > 1.0
    b.settle("teacher", 0.3, 0.1)
    b.reserve("judge", 0.25)
    with pytest.raises(OverBudget, match="budget.per_role.judge"):
        b.reserve("judge", 0.1)
    assert b.total_spent() == pytest.approx(0.6)


def _cli():
    from tapir.cli import _add_commands, cli

    _add_commands()
    return cli


def test_dry_run_refuses_a_plan_priced_above_the_budget(tmp_path, tiny_model):
    from click.testing import CliRunner

    cfg = api_config(tmp_path, tiny_model, "http://127.0.0.1:9/v1", budget={"max_cost_usd": 0.000001})
    data = yaml.safe_load(cfg.read_text())
    data["teacher"]["model"]["model"] = "openai/gpt-4o-mini"  # priced in litellm's map
    data["teacher"]["model"]["options"].pop("api_base")
    cfg.write_text(yaml.safe_dump(data))
    db = tmp_path / "t.db"
    args = ["--db", str(db), "distill", str(cfg), "--dry-run"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000000")
        refused = CliRunner().invoke(_cli(), args)
        shown = CliRunner().invoke(_cli(), args + ["--over-budget"])
    assert refused.exit_code == 2, refused.output
    assert "is above budget.max_cost_usd ($0.00)" in refused.output and "--over-budget" in refused.output
    assert shown.exit_code == 0, shown.output
    assert "budget: the plan's estimated cost $" in shown.output
    assert not db.exists()


def test_summary_runs_show_and_logs_count_every_attempt(tmp_path, tiny_model):
    from click.testing import CliRunner

    # The first two requests time out (the teacher's timeout is 2 s): retried, kept, counted.
    faults = Faults(pattern=["slow", "slow"], slow_seconds=4.0)
    with OpenAIServer(reply=server_reply, faults=faults) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url, budget={"max_cost_usd": 50})
        data = yaml.safe_load(cfg.read_text())
        data["teacher"]["model"]["options"].update(PRICED)
        data["teacher"]["model"]["generation"] = {"max_new_tokens": 100}
        cfg.write_text(yaml.safe_dump(data))
        db = tmp_path / "t.db"
        result = CliRunner().invoke(_cli(), ["--db", str(db), "distill", str(cfg)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("teacher_answers"))
    ok, failed, calls, sent = map(int, row.split()[3:7])
    assert (ok, failed, calls, sent) == (8, 0, 8, 10)
    assert "2 attempt(s) timed out or broke mid-answer" in result.output
    assert "spend $" in result.output and "of budget $50.00" in result.output

    store = sqlite_utils.Database(db)
    run_id = store.execute("select id from runs").fetchone()[0]
    shown = CliRunner().invoke(_cli(), ["--db", str(db), "runs", "show", run_id])
    assert shown.exit_code == 0, shown.output
    assert any(line.startswith("teacher_answers") and line.split()[6] == "10" for line in shown.output.splitlines())
    assert "of budget $50.00" in shown.output
    retried = store.execute("select id from llm_calls where attempts = 2").fetchall()
    assert len(retried) == 2
    logs = CliRunner().invoke(_cli(), ["--db", str(db), "logs", "-n", "0"])
    assert logs.exit_code == 0, logs.output
    assert len(re.findall(r"attempts: 1 timeout 2\.\d s \(maybe billed\), 2 ok", logs.output)) == 2
