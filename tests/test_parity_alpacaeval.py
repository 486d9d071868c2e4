"""Parity with alpaca_eval 0.6.6: its own pipeline
(``alpaca_eval.main.evaluate`` with the ``weighted_alpaca_eval_gpt4_turbo``
annotator, its openai decoder, parser and ``get_length_controlled_winrate``)
and tapir's ``alpacaeval`` evaluator in reference mode, on the same 16
instructions, model outputs, reference outputs and scripted judge replies,
both talking HTTP to the same local OpenAI-compatible server.

The judge favours whichever output is shown first by 0.2 in probability and
answers with top logprobs; some replies are odd on purpose: a verdict token
with a leading space (" m"), a top token that is no verdict, no logprobs at
all, no verdict token among the top ones; one instruction has identical
outputs (1.5, never sent). Some model outputs are odd on purpose too, as a
model may write them: padded with whitespace, whitespace only, empty, and
the reference output plus a newline (not identical: sent). alpaca_eval gets
the outputs as an outputs file holds them (``evaluate``, which strips
nothing). Asserted: every request body identical, the swapped set
identical, each preference identical, and the win rate, standard error, LC
win rate and average length equal to 1e-9.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from tapir.plugins import registry

pytestmark = pytest.mark.filterwarnings("ignore")

N = 16
MODEL = "scripted:student"
JUDGE = "openai/gpt-4-1106-preview"
BIAS = 0.2  # added to the probability of the output shown first
LEADING_SPACE, NOT_A_VERDICT, NO_LOGPROBS, NO_VERDICT, IDENTICAL = 3, 5, 7, 9, 15
EMPTY, PADDED, BLANK, NEAR_IDENTICAL = 1, 11, 13, 14  # outputs: "", whitespace around, whitespace only, ref + "\n"


def p_true(i: int) -> float:
    """P(the model's output is better) for instruction i, before the bias:
    mostly better, and more so when longer (so the LC GLM has a length term
    and a baseline term to fit, and does not sit at 50)."""
    delta = len(model_output(i)) - len(reference_output(i))
    return round(min(0.95, max(0.05, 0.75 + 0.2 * math.tanh(delta / 60))), 4)


def instruction(i: int) -> str:
    return f"INSTR{i:02d}: explain topic number {i} in a few sentences"


def reference_output(i: int) -> str:
    return f"REFTEXT{i:02d} " + " ".join(["reference words"] * (4 + (i * 5) % 11))


def model_output(i: int) -> str:
    if i == IDENTICAL:
        return reference_output(i)
    if i == NEAR_IDENTICAL:
        return reference_output(i) + "\n"
    if i == EMPTY:
        return ""
    if i == BLANK:
        return " \n\t  \n"
    text = f"MODTEXT{i:02d} " + "model answer " * (2 + (i * 3) % 13) + "end"
    return f"\n\n  {text}   \n" if i == PADDED else text


def _which(messages) -> tuple[int, bool, bool]:
    """(instruction index, whether the model's output is shown first, whether
    the prompt is alpaca_eval's (m/M) rather than tapir's robust one (A/B))."""
    user = next(m["content"] for m in messages if m["role"] == "user"
                and ("model_identifier" in m["content"] or "### Instruction" in m["content"]))
    i = int(re.search(r"INSTR(\d+)", user).group(1))
    if "model_identifier" in user:  # the output shown first, exactly as the prompt holds it
        first = re.search(r'"output": """(.*?)"""', user, re.S).group(1)
        return i, first != reference_output(i), True
    first = user.split("### Output A")[1].split("### Output B")[0]
    return i, reference_output(i) not in first, False


def judge_reply(messages, body):
    """The position-biased judge, in the verdict tokens of the prompt it got."""
    i, model_first, alpaca = _which(messages)
    first, second = ("m", "M") if alpaca else ("A", "B")
    q_first = p_true(i) if model_first else 1 - p_true(i)
    p_first = min(0.97, q_first + BIAS)
    dist = {first: p_first, second: 1 - p_first}
    if i == LEADING_SPACE:  # most of the mass on " m"/" M"; alpaca_eval reads only the bare tokens
        dist = {" " + first: 0.6 * p_first, " " + second: 0.6 * (1 - p_first),
                first: 0.3 * p_first, second: 0.3 * (1 - p_first)}
    elif i == NOT_A_VERDICT:  # the top token is no verdict
        dist = {"The": 0.5, first: 0.5 * p_first, second: 0.5 * (1 - p_first)}
    elif i == NO_VERDICT:
        dist = {"The": 0.6, "Both": 0.4}
    top = sorted(((t, math.log(p)) for t, p in dist.items()), key=lambda kv: -kv[1])
    if i == NO_LOGPROBS:
        return {"text": first if p_first >= 0.5 else second, "logprobs": []}
    return {"text": top[0][0], "logprobs": [(top[0][0], top[0][1], top)]}


def write_data(path):
    rows = [{"instruction": instruction(i), "output": reference_output(i), "generator": "ref_gen",
             "dataset": "parity"} for i in range(N)]
    path.write_text(json.dumps(rows))
    return rows


def register_student(register_plugin):
    from tapir import hookimpl

    from fakes import ScriptedBackend

    def answer(messages):
        return model_output(int(re.search(r"INSTR(\d+)", messages[-1]["content"]).group(1)))

    student = ScriptedBackend(answer, model_id="scripted-student")

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("scripted", lambda name, options: student)

    register_plugin(Plugin(), "scripted-student")
    return student


def fake_gamed(monkeypatch, tmp_path):
    """alpaca_eval's LC function downloads df_gamed.csv whatever the GLM; the
    minimal GLM reads nothing from it but the index, so a placeholder serves."""
    import pandas as pd
    glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "x", "index": range(N), "instruction_difficulty": 0.0, "preference": 1.5,
                  "std_delta_len": 0.0, "not_gamed_baseline": False}).to_csv(path, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(path))


def run_alpaca_eval(srv, rows):
    """alpaca_eval's own evaluate(), writing nothing, against the local server."""
    from alpaca_eval.main import evaluate

    leaderboard, annotations = evaluate(
        model_outputs=[{"instruction": instruction(i), "output": model_output(i), "generator": MODEL}
                       for i in range(N)],
        reference_outputs=rows,
        annotators_config="weighted_alpaca_eval_gpt4_turbo",
        output_path=None, precomputed_leaderboard=None, is_return_instead_of_print=True,
        fn_metric="get_length_controlled_winrate",
        metric_kwargs={"glm_name": "length_controlled_minimal", "save_weights_dir": None},
        annotation_kwargs={"openai_api_base": srv.base_url, "openai_api_keys": ["sk-test"],
                           "client_config_path": "/nonexistent", "num_procs": 1},
        caching_path=None,
    )
    return leaderboard.loc[MODEL], annotations


def tapir_options(srv, data_path, **extra):
    return {"data_path": str(data_path), "judge_model": JUDGE,
            "judge_options": {"api_base": srv.base_url, "concurrency": 4, "max_retries": 0},
            "max_new_tokens": 64, **extra}


def tapir_preferences(store, run_id="p1") -> dict[int, float]:
    """Each instruction's final preference (alpaca_eval's 1..2 scale), from the stored judgments."""
    out = {}
    for item_id, position, pref in store.execute(
            "select item_id, position, preference from judgments where scope = ? and error is null", [run_id]):
        shown = 1.0 + pref
        out[int(item_id.split("-")[1])] = 3.0 - shown if position == "ba" else shown
    return out


def _by_instruction(bodies) -> dict[int, dict]:
    return {_which(b["messages"])[0]: b for b in bodies}


def test_reference_mode_matches_alpaca_eval(pm, store, register_plugin, monkeypatch, tmp_path, caplog):
    pytest.importorskip("alpaca_eval.main", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from tapir_testing.openai_server import OpenAIServer

    rows = write_data(tmp_path / "set.json")
    register_student(register_plugin)
    fake_gamed(monkeypatch, tmp_path)
    with OpenAIServer(reply=judge_reply) as srv:
        theirs, their_annotations = run_alpaca_eval(srv, rows)
        their_bodies = _by_instruction(srv.bodies)
        srv.reset_counts()
        evaluator = registry().get("evaluators", "alpacaeval").create(options=tapir_options(srv, tmp_path / "set.json"))
        assert evaluator.preflight(MODEL) == []
        ours = {(r["task"], r["metric"]): r for r in evaluator.run(MODEL, store, run_id="p1")}
        our_bodies = _by_instruction(srv.bodies)
        assert srv.requests == N - 1  # identical outputs are not sent; no re-ask

    # every request: the same body (messages byte for byte, every parameter)
    assert sorted(their_bodies) == sorted(our_bodies) == [i for i in range(N) if i != IDENTICAL]
    differing = [i for i in their_bodies if their_bodies[i] != our_bodies[i]]
    assert differing == []
    for i, body in our_bodies.items():
        assert [(m["role"], m["content"]) for m in body["messages"]] == \
            [(m["role"], m["content"]) for m in their_bodies[i]["messages"]]
    sample = our_bodies[0]
    assert {k: v for k, v in sample.items() if k != "messages"} == {
        "model": "gpt-4-1106-preview", "max_tokens": 1, "temperature": 1, "top_p": 1.0, "logprobs": True,
        "top_logprobs": 5}

    # the same instructions swapped (alpaca_eval's seeded choice), both orders present
    their_swapped = {i for i, b in their_bodies.items() if _which(b["messages"])[1]}
    our_swapped = {int(item.split("-")[1]) for (item,) in store.execute(
        "select item_id from judgments where position = 'ba'")} - {IDENTICAL}
    assert their_swapped == our_swapped and 0 < len(our_swapped) < N - 1

    # each preference identical (failures: missing on both sides)
    theirs_pref = {int(re.search(r"INSTR(\d+)", a["instruction"]).group(1)): a["preference"]
                   for a in their_annotations}
    ours_pref = tapir_preferences(store)
    missing = {i for i, p in theirs_pref.items() if p is None or p != p}
    assert missing == {NO_LOGPROBS, NO_VERDICT} == set(range(N)) - set(ours_pref)
    for i, p in ours_pref.items():
        assert p == pytest.approx(theirs_pref[i], abs=1e-9), i
    assert ours_pref[IDENTICAL] == 1.5
    # the leading-space tokens are ignored: the bare ones alone decide
    q_first = p_true(LEADING_SPACE) if LEADING_SPACE in our_swapped else 1 - p_true(LEADING_SPACE)
    p_first = min(0.97, q_first + BIAS)
    assert ours_pref[LEADING_SPACE] == pytest.approx(2 - p_first if LEADING_SPACE not in our_swapped
                                                      else 1 + p_first, abs=1e-9)

    # the numbers
    wr = ours[("alpaca_eval", "win_rate")]
    lc = ours[("alpaca_eval", "length_controlled_winrate")]
    assert wr["n"] == int(theirs["n_total"]) == N - 2
    assert wr["value"] == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert wr["stderr"] == pytest.approx(theirs["standard_error"], abs=1e-9)
    assert lc["value"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-9)
    assert lc["stderr"] == pytest.approx(theirs["lc_standard_error"], abs=1e-9)
    assert lc["meta"]["glm"] == "length_controlled_minimal"
    assert ours[("alpaca_eval", "discrete_win_rate")]["value"] == pytest.approx(theirs["discrete_win_rate"], abs=1e-9)
    length = ours[("alpaca_eval", "avg_length")]
    assert length["value"] == pytest.approx(sum(len(model_output(i)) for i in range(N)) / N, abs=1e-9)
    assert int(length["value"]) == theirs["avg_length"]  # alpaca_eval truncates its mean to an int

    # the odd outputs went to the judge as generated, whitespace and all
    for i in (EMPTY, PADDED, BLANK, NEAR_IDENTICAL):
        assert f'"""{model_output(i)}"""' in our_bodies[i]["messages"][-1]["content"], i
    assert ours_pref[NEAR_IDENTICAL] != 1.5 and NEAR_IDENTICAL in our_bodies

    # the row contract
    meta = wr["meta"]
    assert meta["judge"] == JUDGE and meta["judge_mode"] == "reference" and meta["subset"] is None
    assert meta["failures"] == 2
    assert meta["failure_reasons"] == {"no_logprobs": 1, "no_verdict_token": 1}
    assert meta["failure_example"].startswith(f"alpaca-{NO_LOGPROBS}: no_logprobs")
    assert meta["read"] == {"logprobs": N - 3, "text": 0, "identical_outputs": 1}
    warned = [r.getMessage() for r in caplog.records if r.name == "tapir.alpacaeval"]
    assert len(warned) == 1 and f"returned none in 1 of {N - 1} replies" in warned[0]
    assert meta["data_version"].startswith("file:set.json@sha256:")
    assert meta["reference"]["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    assert meta["reference"]["package"] == "alpaca_eval==0.6.6"


def test_lc_without_the_hub_download_equals_alpaca_evals(pm, store, register_plugin, monkeypatch, tmp_path):
    """Offline, the minimal GLM is fitted with alpaca_eval's own functions
    without its df_gamed.csv download: the same number as its function."""
    pytest.importorskip("alpaca_eval.main", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from tapir_testing.openai_server import OpenAIServer
    from alpaca_eval.metrics import glm_winrate

    def offline(**kwargs):
        raise OSError("offline")

    write_data(tmp_path / "set.json")
    register_student(register_plugin)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", offline)
    with OpenAIServer(reply=judge_reply) as srv:
        evaluator = registry().get("evaluators", "alpacaeval").create(options=tapir_options(srv, tmp_path / "set.json"))
        assert evaluator.preflight(MODEL) == []
        ours = {(r["task"], r["metric"]): r for r in evaluator.run(MODEL, store, run_id="p1")}
    lc = ours[("alpaca_eval", "length_controlled_winrate")]
    assert "without the df_gamed.csv download" in lc["meta"]["lc_path"]
    fake_gamed(monkeypatch, tmp_path)
    from tapir_alpacaeval.metrics import MINIMAL_GLM, Annotation, alpaca_eval_lc

    prefs = tapir_preferences(store)
    anns = [Annotation(i, instruction(i), reference_output(i), model_output(i), "ref_gen", MODEL, "a",
                       prefs.get(i, float("nan"))) for i in range(N)]
    value, stderr = alpaca_eval_lc(anns, MINIMAL_GLM)
    assert lc["value"] == pytest.approx(value, abs=1e-9) and lc["stderr"] == pytest.approx(stderr, abs=1e-9)


def test_robust_mode_keeps_tapirs_judge_and_differs(pm, store, register_plugin, tmp_path, caplog):
    """judge_mode robust: tapir's own prompt (A/B, greedy), its hash order,
    leading-space verdicts accepted and a re-ask; rows under their own task."""
    from tapir_testing.openai_server import OpenAIServer

    write_data(tmp_path / "set.json")
    register_student(register_plugin)
    with OpenAIServer(reply=judge_reply) as srv:
        evaluator = registry().get("evaluators", "alpacaeval").create(
            options=tapir_options(srv, tmp_path / "set.json", judge_mode="robust"))
        rows = {(r["task"], r["metric"]): r for r in evaluator.run(MODEL, store, run_id="r1")}
        bodies = srv.bodies
    assert ("alpaca_eval", "win_rate") not in rows
    wr = rows[("alpaca_eval@robust", "win_rate")]
    assert wr["meta"]["judge_mode"] == "robust"
    assert all("model_identifier" not in json.dumps(b["messages"]) for b in bodies)
    assert all(b["temperature"] == 0 for b in bodies)
    # identical outputs judged too; the two replies whose chosen token is no verdict are re-asked, and fail
    assert len(bodies) == N + 2
    assert wr["n"] == N - 2 and wr["meta"]["failure_reasons"] == {"parse": 2}
    # the reply without logprobs was read from its text, and said so once
    warned = [r.getMessage() for r in caplog.records if r.name == "tapir.alpacaeval"]
    assert len(warned) == 1 and f"returned none in 1 of {N + 2} replies" in warned[0]
    assert wr["meta"]["read"]["text"] >= 1 and sum(wr["meta"]["read"].values()) == N - 2
    # the judge's calls say who asked (the judge plugin's requests name no item)
    roles = store.execute("select role, count(*) from llm_calls where run_id = 'r1' group by role").fetchall()
    assert dict(roles) == {"answer": N, "judge": N + 2}
