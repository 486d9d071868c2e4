"""A re-run retries a reply that failed on its content with a fresh draw
(issue 20, item 1): a new sample index (a new cache key, and a seed the
server sees), not the cached reply; up to failures.max_draws draws; a
failure the same inputs reproduce (greedy from a local model) is not asked
again and says which option changes it; the dry run's call counts for a
resumed stage are what the re-run sends.

Against a local OpenAI-compatible server (teacher, rewriter and pairwise
judge) and the tiny model as the student.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlite_utils
from pipeline_helpers import api_config, server_reply
from tapir_testing.openai_server import OpenAIServer

from tapir.pipeline.engine import StageFailed

API = "model like 'litellm:%'"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    monkeypatch.setenv("TAPIR_TEST_KEY", "sk-test-not-a-real-key-000000")


@pytest.fixture
def said(monkeypatch):
    from tapir import progress

    lines: list[str] = []
    monkeypatch.setattr(progress, "say", lines.append)
    return lines


def distill(cfg, db, **kw):
    from tapir.pipeline.runner import distill as run

    return run(cfg, str(db), **kw)


def planned_calls(cfg, db) -> dict[str, dict[str, int]]:
    """The dry run's calls per stage label and role (nothing written)."""
    from tapir.pipeline.dryrun import plan
    from tapir.pipeline.preflight import check

    return {s.label: dict(s.calls) for s in plan(check(str(cfg), str(db), [])).stages if s.calls}


def api_rows(db, since: int) -> dict[tuple[str, str], int]:
    """llm_calls rows to the servers after row ``since``, per (stage name, role)."""
    rows = sqlite_utils.Database(db).execute(
        f"select s.name, s.round, c.role, count(*) from llm_calls c join stages s on s.key = c.stage_key "
        f"where c.id > ? and {API} group by s.key, c.role", [since]).fetchall()
    out: dict = {}
    for name, round_, role, n in rows:
        label = name + (f" (round {round_})" if round_ else "")
        out.setdefault(label, {})[role] = out.get(label, {}).get(role, 0) + n
    return out


def last_call(db) -> int:
    return sqlite_utils.Database(db).execute("select coalesce(max(id), 0) from llm_calls").fetchone()[0]


def flaky(text: str) -> bool:
    """Half the prompts, by a hash of the text (stable across runs)."""
    return hashlib.sha256(text.encode()).digest()[0] % 2 == 0


def first_draw_fails(messages, body):
    """At temperature 0 the first draw carries no seed; a fresh draw does.
    Without a seed: no score in half the judge replies, and a refinement far
    too long for half the instructions. With one: good replies."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    question = next(m["content"] for m in messages if m["role"] == "user")  # the nudge keeps it first
    if body.get("seed") is None and flaky(question):
        if any("Score of the Assistant 1" in m["content"] for m in messages):
            return "Both answers are fine, I cannot pick numbers."
        if system.startswith("You refine instructions"):
            return "Refined: " + "much more detail please " * 60
    return server_reply(messages, body)


def test_content_failures_heal_with_fresh_draws_and_the_plan_counts_them(tmp_path, tiny_model, said):
    with OpenAIServer(reply=first_draw_fails) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url)
        db = tmp_path / "t.db"

        # Run 1: judge replies without a score for some items (above its 5% limit).
        with pytest.raises(StageFailed) as first:
            distill(cfg, db)
        assert "stage judge failed" in str(first.value)
        assert "draw 1 of 3: a re-run asks again with a fresh draw" in str(first.value)
        failed_judged = sqlite_utils.Database(db).execute(
            "select count(*) from outcomes o join stages s on s.key = o.scope "
            "where s.name = 'judge' and o.status = 'failed'").fetchone()[0]
        assert failed_judged >= 1

        # The dry run: the judge is resumed, and only its failed items are asked (both orders each).
        plan = planned_calls(cfg, db)
        assert plan["judge"] == {"judge": 2 * failed_judged}
        since = last_call(db)

        # Run 2: the judge's failed items are asked with a fresh draw (a seed the server sees);
        # then the rewriter's too-long refinements stop the run at rewrite (above 10%).
        with pytest.raises(StageFailed) as second:
            distill(cfg, db)
        assert "stage rewrite (round 1) failed" in str(second.value)
        assert "instruction refinement is too long" in str(second.value)
        assert "[draw 1 of 3: a re-run asks again with a fresh draw]" in str(second.value)
        assert f"   judge: {failed_judged} item(s) retried with a fresh draw ({failed_judged} x draw 2 of 3)" in said
        sent = api_rows(db, since)
        assert sent["judge"] == plan["judge"]  # what the plan promised for the resumed stage
        # Every stage the plan runs from scratch sends what it said too (teacher answers, expand: no malformed).
        for label, calls in plan.items():
            if label not in ("judge", "rewrite (round 1)"):
                assert sent.get(label, {}) == {k: v for k, v in calls.items() if k != "classifier"}, label

        failed_rewrites = sqlite_utils.Database(db).execute(
            "select count(*) from outcomes o join stages s on s.key = o.scope "
            "where s.name = 'rewrite' and o.status = 'failed' and o.draws = 1 and o.reproduces = 0").fetchone()[0]
        assert failed_rewrites >= 1
        plan = planned_calls(cfg, db)
        assert plan["rewrite (round 1)"] == {"rewriter": failed_rewrites, "teacher": failed_rewrites}
        since = last_call(db)
        bodies_before = len(srv.stats(bodies=True)["bodies"])

        # Run 3: the rewrites are asked again with a fresh draw and pass; the run completes.
        said.clear()
        outcome = distill(cfg, db)
        assert all(r.failed == 0 for r in outcome.results)
        sent = api_rows(db, since)
        assert sent["rewrite (round 1)"] == plan["rewrite (round 1)"]
        assert f"   rewrite (round 1): {failed_rewrites} item(s) retried with a fresh draw " \
               f"({failed_rewrites} x draw 2 of 3)" in said
        # The fresh draws reached the server as new requests with a seed (the cached reply was not served).
        new_bodies = srv.stats(bodies=True)["bodies"][bodies_before:]
        refines = [b for b in new_bodies if b["messages"][0]["content"].startswith("You refine instructions")]
        assert len(refines) == failed_rewrites and all(b.get("seed") is not None for b in refines)
        rows = sqlite_utils.Database(db).execute(
            "select distinct sample from llm_calls where id > ? and role = 'rewriter'", [since]).fetchall()
        assert rows == [(1,)]


def always_too_long(messages, body):
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    if system.startswith("You refine instructions"):
        return "Refined: " + "much more detail please " * 60
    return server_reply(messages, body)


def test_draws_run_out_and_the_rerun_says_so_instead_of_asking_again(tmp_path, tiny_model, said):
    from tapir.cli.distill_cmd import _summary

    with OpenAIServer(reply=always_too_long) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url,
                         failures={"max_draws": 2, "max_failure_rate": {"rewrite": 1.0}})
        db = tmp_path / "t.db"
        first = distill(cfg, db)
        rewrite = next(r for r in first.results if r.step.stage == "rewrite")
        assert rewrite.failed >= 1 and rewrite.final == 0
        assert "re-run to retry them" in _summary(first).splitlines()[0]

        before = last_call(db)
        second = distill(cfg, db)  # draw 2 of 2: asked again, fails again, draws used up
        assert api_rows(db, before)["rewrite (round 1)"] == {"rewriter": rewrite.failed}
        rewrite2 = next(r for r in second.results if r.step.stage == "rewrite")
        assert rewrite2.final == rewrite2.failed == rewrite.failed
        head = _summary(second).splitlines()[0]
        assert "re-run to retry" not in head
        assert f"{rewrite.failed} fail the same way on a re-run" in head
        reasons = [r[0] for r in sqlite_utils.Database(db).execute(
            "select reason from outcomes where status = 'failed'")]
        assert all("draw 2 of 2: draws used up, a re-run does not ask again; raise failures.max_draws" in r
                   for r in reasons)

        # The dry run promises nothing for it, and the re-run sends nothing.
        plan = planned_calls(cfg, db)
        assert "rewrite (round 1)" not in plan
        before = last_call(db)
        third = distill(cfg, db)
        assert api_rows(db, before) == {}
        assert next(r for r in third.results if r.step.stage == "rewrite").status == "reused"
        assert "re-run to retry" not in _summary(third).splitlines()[0]


def test_greedy_local_failures_reproduce_and_are_not_asked_again(tmp_path, tiny_model, said):
    """The rewriter and the teacher on the tiny local model at temperature 0:
    another draw gives the same replies, so rejected rewrites are final at once."""
    from tapir.pipeline.draws import reproduces

    assert reproduces(f"hf:{tiny_model}", 0.0) and not reproduces(f"hf:{tiny_model}", 0.7)
    assert not reproduces("openai/gpt-4o-mini", 0.0)
    local = {"model": f"hf:{tiny_model}", "options": {"batch_size": 8}, "generation": {"max_new_tokens": 12}}
    with OpenAIServer(reply=server_reply) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url,
                         rewriter={"name": "task-aware", "options": {"num_examples": 0}, "model": local},
                         failures={"max_failure_rate": {"rewrite": 1.0}})
        db = tmp_path / "t.db"
        first = distill(cfg, db)
        rewrite = next(r for r in first.results if r.step.stage == "rewrite")
        assert rewrite.failed >= 1 and rewrite.final == rewrite.failed
        reasons = [r[0] for r in sqlite_utils.Database(db).execute(
            "select o.reason from outcomes o join stages s on s.key = o.scope "
            "where s.name = 'rewrite' and o.status = 'failed'")]
        assert all("the same inputs reproduce this reply (greedy decoding at temperature 0 from a local model)"
                   in r and "model.generation.temperature above 0" in r for r in reasons)
        before = sqlite_utils.Database(db).execute("select count(*) from llm_calls where role = 'rewriter'").fetchone()
        second = distill(cfg, db)
        after = sqlite_utils.Database(db).execute("select count(*) from llm_calls where role = 'rewriter'").fetchone()
        assert before == after
        assert next(r for r in second.results if r.step.stage == "rewrite").status == "reused"


def test_malformed_expansions_are_asked_with_fresh_samples_not_served_from_the_cache(tmp_path, tiny_model):
    """Run 1: the teacher writes no usable instruction, on every try (the draws fail
    above expand's 20%). Run 2, the teacher fixed: without fresh draws the
    cache would serve the same malformed replies (0 calls, the same failure); with them
    each failed draw is asked once more, with sample indices past those already used."""
    broken = {"on": True}

    def reply(messages, body):
        text = messages[-1]["content"]
        if broken["on"] and text.startswith(("You write new tasks", "Act as an Instruction Creator")):
            return "Sure."
        return server_reply(messages, body)

    with OpenAIServer(reply=reply) as srv:
        cfg = api_config(tmp_path, tiny_model, srv.base_url, curriculum={"rounds": 1, "expand_per_round": [6]})
        db = tmp_path / "t.db"
        with pytest.raises(StageFailed) as first:
            distill(cfg, db)
        assert "stage expand (round 1) failed" in str(first.value)
        assert "the reply held no usable instruction after 3 tries [draw 1 of 3" in str(first.value)
        failed = sqlite_utils.Database(db).execute(
            "select count(*) from outcomes o join stages s on s.key = o.scope "
            "where s.name = 'expand' and o.status = 'failed' and o.draws = 1").fetchone()[0]
        assert failed == 6
        plan = planned_calls(cfg, db)
        assert plan["expand (round 1)"] == {"teacher": failed}

        broken["on"] = False
        since = last_call(db)
        distill(cfg, db)
        assert api_rows(db, since)["expand (round 1)"] == plan["expand (round 1)"]
        samples = [r[0] % 100 for r in sqlite_utils.Database(db).execute(
            "select c.sample from llm_calls c join stages s on s.key = c.stage_key "
            "where s.name = 'expand' and c.id > ?", [since])]
        assert samples == [3] * failed  # draw 2's first try: past the 3 tries of draw 1
