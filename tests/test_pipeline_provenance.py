"""A pipeline run against local OpenAI-compatible servers records who asked
for every judge and classifier call (role and item in llm_calls, found by
``tapir logs --role judge``), the provider's model and fingerprint, and
how each MFD judgment was read (judgments.read_by, counted in the judge
stage's info)."""

from __future__ import annotations

import json

import pytest
from pipeline_helpers import api_config, server_reply
from tapir_testing.openai_server import OpenAIServer


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.setenv("TAPIR_TEST_KEY", "sk-test-not-a-real-key-000000")


def provenance_reply(messages, body):
    text = server_reply(messages, body)
    return {"text": text, "model": body["model"] + "-2026-12-01", "system_fingerprint": "fp_local"}


def test_judge_and_classifier_calls_carry_role_item_and_provenance(tmp_path, tiny_model):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli
    from tapir.pipeline.runner import distill

    api = {"api_key_env": "TAPIR_TEST_KEY", "timeout": 2.0, "max_retries": 2, "retry_base_seconds": 0.05,
           "concurrency": 4}
    with OpenAIServer(reply=provenance_reply) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url,
                         classifier={"name": "llm", "model": {"model": "openai/classifier",
                                                              "options": {**api, "api_base": srv.base_url}},
                                     "options": {"prompt": "label", "retry": False}},
                         curriculum={"rounds": 1, "expand_per_round": [2]})
        db = tmp_path / "t.db"
        result = distill(cfg, str(db))
    store = result.store
    judge_key, classify_key = result.key("judge", 0), result.key("classify", 0)
    items = {r[0] for r in store.execute("select id from items where scope = ?", [result.key("ingest", 0)])}

    judge_calls = store.execute("select role, item_id, provider_model, system_fingerprint from llm_calls "
                                "where stage_key = ?", [judge_key]).fetchall()
    assert judge_calls and {r[0] for r in judge_calls} == {"judge"}
    assert {r[1] for r in judge_calls} == {r[0] for r in store.execute(
        "select item_id from judgments where scope = ?", [judge_key])}
    assert {(r[2], r[3]) for r in judge_calls} == {("judge-2026-12-01", "fp_local")}

    classifier_calls = store.execute("select role, item_id from llm_calls where stage_key = ?",
                                     [classify_key]).fetchall()
    assert {r[0] for r in classifier_calls} == {"classifier"}
    assert {r[1] for r in classifier_calls} == items

    # Table 8's format, followed by every reply: read by the reference parser, counted in the stage's info.
    read_by = store.execute("select read_by, count(*) from judgments where scope = ? group by read_by",
                            [judge_key]).fetchall()
    assert read_by == [("reference parser", len(items))]
    assert result.info("judge", 0)["read_by"] == {"reference parser": len(items)}

    _add_commands()
    out = CliRunner().invoke(cli, ["--db", str(db), "logs", "--role", "judge", "-n", "0", "--json"])
    assert out.exit_code == 0, out.output
    logged = json.loads(out.stdout)
    assert len(logged) == len(judge_calls) and {c["item_id"] for c in logged} == {r[1] for r in judge_calls}

    # The counts reach the run summary, `tapir runs show` and the report.
    from tapir.cli.distill_cmd import _summary
    from tapir.report import build_report

    line = f"S0: read by reference parser {len(items)}"
    assert line in _summary(result)
    shown = CliRunner().invoke(cli, ["--db", str(db), "runs", "show", result.run.id])
    assert shown.exit_code == 0, shown.output
    assert line in shown.output
    report = build_report(store, result.run.id)
    [mfd] = [s for s in report.sections if s.id == "mfd"]
    assert f"S0 judgments: read by reference parser {len(items)}" in mfd.notes
