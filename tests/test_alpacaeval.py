"""AlpacaEval runner: data loading, answers through the tiny model; in
judge_mode robust the preference judge over a local OpenAI-compatible
server with preferences scripted per instruction (logprob-weighted and
plain), order randomisation, win rate and stderr, LC win rate against
alpaca_eval's own function, failures, re-runs; in reference mode (the
default) failures with reasons retried on a re-run, subsets, options.
Parity with alpaca_eval's own pipeline: tests/test_parity_alpacaeval.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tapir.errors import TapirError
from tapir.plugins import registry

DATA = Path(__file__).parent / "data" / "alpacaeval_small" / "alpaca_eval_small.json"
N = 20
FAIL = 13  # the judge never gives a verdict for this instruction
PLAIN = {2, 9, 16}  # the judge answers with a bare letter: no logprob weighting


def p_model(i: int) -> float:
    """Scripted P(model output better) for instruction i."""
    return round(0.03 + 0.9 * ((i * 37) % 19) / 18, 4)


def _parts(messages) -> tuple[int, bool]:
    """(instruction index, whether the reference is shown as Output A)."""
    user = next(m["content"] for m in messages if m["role"] == "user" and "### Instruction" in m["content"])
    instruction = user.split("### Output A")[0]
    output_a = user.split("### Output A")[1].split("### Output B")[0]
    i = int(re.search(r"INSTR(\d+)", instruction).group(1))
    return i, f"REFTEXT{i:02d}" in output_a


def _reply(messages, body):
    from tapir_testing.openai_server import token_distribution

    i, ref_is_a = _parts(messages)
    if i == FAIL:
        return "cannot decide"
    p = p_model(i)
    if i in PLAIN:
        model_wins = p > 0.5
        return ("A" if ref_is_a else "B") if not model_wins else ("B" if ref_is_a else "A")
    dist = {"B": p, "A": 1 - p} if ref_is_a else {"A": p, "B": 1 - p}
    letter = max(dist, key=dist.get)
    return {"text": letter, "logprobs": token_distribution(dist)}


def expected_prefs() -> list[float]:
    out = []
    for i in range(N):
        if i == FAIL:
            continue
        out.append((1.0 if p_model(i) > 0.5 else 0.0) if i in PLAIN else p_model(i))
    return out


def _options(srv, **extra):
    return {
        "judge_mode": "robust",
        "data_path": str(DATA),
        "judge_model": "openai/judge",
        "judge_options": {"api_base": srv.base_url, "concurrency": 8, "max_retries": 0},
        "max_new_tokens": 8,
        "model_options": {"batch_size": 20},
        **extra,
    }


def _rows(rows):
    return {(r["task"], r["metric"]): r for r in rows}


def _count(store, table):
    return store.execute(f"select count(*) from {table}").fetchone()[0]


def _fake_gamed(monkeypatch, tmp_path):
    """alpaca_eval's LC function downloads df_gamed.csv before it looks at the
    GLM; the minimal GLM does not use it, so a placeholder stands in."""
    import pandas as pd
    glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "x", "index": range(N), "instruction_difficulty": 0.0, "preference": 1.5,
                  "std_delta_len": 0.0, "not_gamed_baseline": False}).to_csv(path, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(path))


# -- data ----------------------------------------------------------------------


def test_local_file_and_jsonl(tmp_path):
    from tapir_alpacaeval.data import load_instructions

    data = load_instructions(DATA)
    assert len(data.instructions) == N and not data.standard
    assert data.instructions[3].item_id == "alpaca-3" and data.instructions[3].dataset == "oasst"
    lines = tmp_path / "set.jsonl"
    lines.write_text("\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(3)))
    got = load_instructions(lines, limit=2).instructions
    assert [(g.instruction, g.output, g.generator) for g in got] == [("q0", "a0", "reference"), ("q1", "a1", "reference")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q"}]))
    with pytest.raises(TapirError, match="lacks output"):
        load_instructions(bad)


def test_hub_offline_fails_clearly(monkeypatch):
    from tapir_alpacaeval.data import load_instructions

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TapirError, match="could not be loaded from the hub.*data_path"):
        load_instructions()


def test_order_is_randomised_per_instruction_and_seed():
    from tapir_alpacaeval.robust_mode import model_first, p_model as mapped

    assert mapped("ab", 0.8) == 0.8 and mapped("ba", 0.8) == pytest.approx(0.2)
    from tapir_alpacaeval.robust_mode import judge_preference
    from tapir.store.records import StoredJudgment

    def stored(sa=None, sb=None, pref=None):
        return StoredJudgment("alpaca-0", "ab", 0, sa, sb, pref, [], None)

    assert judge_preference(stored(pref=0.3)) == 0.3
    assert [judge_preference(stored(7, 9)), judge_preference(stored(9, 7)), judge_preference(stored(8, 8))] == [1, 0, 0.5]
    assert judge_preference(stored()) is None
    flips = [model_first(0, f"alpaca-{i}") for i in range(200)]
    assert 70 < sum(flips) < 130
    assert flips == [model_first(0, f"alpaca-{i}") for i in range(200)]
    assert flips != [model_first(1, f"alpaca-{i}") for i in range(200)]


def test_lc_unavailable_is_a_row_not_a_crash(monkeypatch):
    from tapir_alpacaeval import metrics

    monkeypatch.setattr(metrics, "_alpaca_eval_available", lambda: "alpaca_eval is not importable (test)")
    result = metrics.length_controlled([])
    assert result.value is None and "not importable" in result.note


# -- end to end ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_alpacaeval_robust_end_to_end(pm, store, tiny_model, monkeypatch, tmp_path):
    """judge_mode robust: tapir's own preference judge (the behaviour before
    reference mode became the default), rows under task alpaca_eval@robust."""
    pytest.importorskip("alpaca_eval.metrics", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from tapir_testing.openai_server import OpenAIServer

    model = f"hf:{tiny_model}"
    with OpenAIServer(reply=_reply) as srv:
        evaluator = registry().get("evaluators", "alpacaeval").create(options=_options(srv))
        rows = _rows(evaluator.run(model, store, run_id="a1"))
        assert srv.requests == N + 1  # one re-ask for the instruction with no verdict

        # the order was randomised: both positions shown, as model_first says
        from tapir_alpacaeval.robust_mode import model_first

        positions = dict(store.execute("select item_id, position from judgments").fetchall())
        assert positions == {f"alpaca-{i}": "ba" if model_first(0, f"alpaca-{i}") else "ab" for i in range(N)}
        assert set(positions.values()) == {"ab", "ba"}
        for body in srv.bodies:
            assert body.get("logprobs")

        prefs = expected_prefs()
        n = len(prefs)
        mean = sum(prefs) / n
        sd = (sum((p - mean) ** 2 for p in prefs) / (n - 1)) ** 0.5
        wr = rows[("alpaca_eval@robust", "win_rate")]
        assert wr["n"] == 19
        assert wr["value"] == pytest.approx(mean * 100, abs=1e-6)
        assert wr["stderr"] == pytest.approx(sd / n ** 0.5 * 100, abs=1e-6)
        assert wr["meta"]["weighted_preferences"] == 19 - len(PLAIN)
        assert rows[("judge@robust", "failures")]["value"] == 1 and rows[("judge@robust", "failures")]["n"] == 20
        assert wr["meta"]["judge_mode"] == "robust" and wr["meta"]["judge"] == "openai/judge"
        assert wr["meta"]["failures"] == 1 and wr["meta"]["failure_reasons"] == {"parse": 1}
        assert wr["meta"]["failure_example"].startswith(f"alpaca-{FAIL}: parse:")
        assert wr["meta"]["subset"] is None and wr["meta"]["data_version"].startswith("file:alpaca_eval_small.json@")
        assert rows[("generation@robust", "failures")]["value"] == 0
        discrete = sum(1.0 if p > 0.5 else 0.0 for p in prefs) / n * 100
        assert rows[("alpaca_eval@robust", "discrete_win_rate")]["value"] == pytest.approx(discrete)
        koala = [p_model(i) if i not in PLAIN else float(p_model(i) > 0.5) for i in range(0, N, 2) if i != FAIL]
        assert rows[("dataset/koala@robust", "win_rate")]["value"] == pytest.approx(sum(koala) / len(koala) * 100)

        # alpaca_eval's own win-rate function agrees on the same annotations
        from alpaca_eval.metrics import get_length_controlled_winrate, get_winrate

        outputs = dict(store.execute("select item_id, text from responses where role = 'answer'").fetchall())
        data = json.loads(DATA.read_text())
        annotations = [
            {"instruction": data[i]["instruction"], "output_1": data[i]["output"],
             "output_2": outputs[f"alpaca-{i}"], "generator_1": "ref-model", "generator_2": model,
             "annotator": "preference", "preference": 1 + p}
            for i, p in zip([i for i in range(N) if i != FAIL], prefs)
        ]
        theirs = get_winrate(annotations)
        assert wr["value"] == pytest.approx(theirs["win_rate"]) and wr["stderr"] == pytest.approx(theirs["standard_error"])

        # LC win rate: a number in [0, 100], equal to alpaca_eval's function
        # (minimal GLM: a custom instruction set has no difficulty estimates)
        lc = rows[("alpaca_eval@robust", "length_controlled_winrate")]
        assert lc["meta"]["glm"] == "length_controlled_minimal"
        assert isinstance(lc["value"], float) and 0 <= lc["value"] <= 100
        _fake_gamed(monkeypatch, tmp_path)
        import pandas as pd

        frame = pd.DataFrame.from_records(annotations, index=[i for i in range(N) if i != FAIL])
        ref = get_length_controlled_winrate(frame, glm_name="length_controlled_minimal", save_weights_dir=None)
        assert lc["value"] == pytest.approx(ref["length_controlled_winrate"])
        assert lc["stderr"] == pytest.approx(ref["lc_standard_error"], abs=1e-9)

        # stored rows, and a re-run that asks nothing and adds nothing
        assert _count(store, "items") == N and _count(store, "judgments") == N
        assert _count(store, "responses") == 2 * N  # references + answers
        counts = {t: _count(store, t) for t in ("items", "responses", "judgments", "llm_calls")}
        again = _rows(evaluator.run(model, store, run_id="a1"))  # the failed one re-judged from the cache
        assert srv.requests == N + 1
        assert {t: _count(store, t) for t in counts} == counts
        assert again[("alpaca_eval@robust", "win_rate")]["value"] == pytest.approx(wr["value"])
        assert again[("alpaca_eval@robust", "length_controlled_winrate")]["value"] == pytest.approx(lc["value"])


@pytest.mark.filterwarnings("ignore")
def test_lc_on_the_standard_set_uses_alpaca_evals_default_glm(monkeypatch, tmp_path):
    """With the hub's difficulty file at hand, the standard 805-instruction
    set goes through alpaca_eval's own get_length_controlled_winrate; when
    the download fails it falls back to the minimal GLM and says so."""
    import random

    glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate")

    from tapir_alpacaeval.metrics import Annotation, length_controlled

    rng = random.Random(0)
    anns = []
    for i in range(40):
        length = rng.randint(10, 400)
        p = min(0.95, max(0.05, length / 400 + rng.uniform(-0.2, 0.2)))
        anns.append(Annotation(i, f"q{i}", "r" * 200, "m" * length, "ref", "model", "judge", 1 + p))

    def offline(**kwargs):
        raise OSError("offline")

    monkeypatch.setattr(glm_winrate, "hf_hub_download", offline)
    fallback = length_controlled(anns, standard=True)
    assert fallback.glm == "length_controlled_minimal" and "length_controlled_v1 failed" in fallback.note
    assert 0 <= fallback.value <= 100

    _fake_gamed(monkeypatch, tmp_path)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(tmp_path / "df_gamed.csv"))
    import pandas as pd

    pd.DataFrame({"model": "x", "index": range(40), "instruction_difficulty": [rng.uniform(-1, 1) for _ in range(40)],
                  "preference": 1.5, "std_delta_len": 0.0, "not_gamed_baseline": False}).to_csv(
        tmp_path / "df_gamed.csv", index=False)
    standard = length_controlled(anns, standard=True)
    assert standard.glm == "length_controlled_v1" and standard.note is None and 0 <= standard.value <= 100


# -- reference mode (the default) -------------------------------------------------


def _reference_reply(calls):
    """alpaca_eval's prompt (m: first shown, M: second): instruction 4 fails
    with HTTP 500 the first time, instruction 6 never has logprobs."""
    from tapir_testing.openai_server import fault, token_distribution

    def reply(messages, body):
        user = messages[-1]["content"]
        assert '"model_identifier": "m"' in user
        i = int(re.search(r"INSTR(\d+)", user).group(1))
        calls[i] = calls.get(i, 0) + 1
        if i == 4 and calls[i] == 1:
            return fault("500")
        if i == 6:
            return {"text": "m", "logprobs": []}
        return {"text": "M", "logprobs": token_distribution({"M": 0.7, "m": 0.3})}

    return reply


@pytest.mark.filterwarnings("ignore")
def test_reference_failures_have_reasons_and_are_retried_on_rerun(pm, store, tiny_model):
    pytest.importorskip("alpaca_eval.main", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from tapir_testing.openai_server import OpenAIServer

    model = f"hf:{tiny_model}"
    calls: dict[int, int] = {}
    with OpenAIServer(reply=_reference_reply(calls)) as srv:
        options = {**_options(srv, instruction_ids="alpaca-2,4, 6,8", limit=3)}
        del options["judge_mode"]  # the default: reference
        evaluator = registry().get("evaluators", "alpacaeval").create(options=options)
        assert evaluator.options.instruction_ids == [2, 4, 6, 8]
        rows = _rows(evaluator.run(model, store, run_id="ref1"))
        wr = rows[("alpaca_eval", "win_rate")]
        assert srv.requests == 3 and calls == {2: 1, 4: 1, 6: 1}
        assert wr["n"] == 1 and wr["meta"]["judge_mode"] == "reference"
        from tapir_alpacaeval.data import digest, load_instructions

        chosen = load_instructions(DATA).instructions
        assert wr["meta"]["subset"] == f"3 of 20 (instruction_ids=2,4,6,8; limit=3) {digest([chosen[i] for i in (2, 4, 6)])}"
        assert (wr["meta"]["instructions"], wr["meta"]["set_size"], wr["meta"]["full_benchmark"]) == (3, 20, False)
        assert wr["meta"]["read"] == {"logprobs": 1, "text": 0, "identical_outputs": 0}
        assert wr["meta"]["failures"] == 2
        assert wr["meta"]["failure_reasons"] == {"api_error": 1, "no_logprobs": 1}
        assert rows[("judge", "failures")]["value"] == 2
        assert rows[("alpaca_eval", "length_controlled_winrate")]["value"] is None  # too few to fit
        # the only judged one: P(M) = 0.7 for the output shown second
        swapped = dict(store.execute("select item_id, position from judgments where scope = 'ref1'").fetchall())
        assert wr["value"] == pytest.approx(100 * (0.3 if swapped["alpaca-2"] == "ba" else 0.7))

        again = _rows(registry().get("evaluators", "alpacaeval").create(options=options).run(
            model, store, run_id="ref1"))
        assert srv.requests == 4 and calls == {2: 1, 4: 2, 6: 1}  # the API failure re-asked; 6 re-parsed from cache
        awr = again[("alpaca_eval", "win_rate")]
        assert awr["n"] == 2 and awr["meta"]["failure_reasons"] == {"no_logprobs": 1}
        assert awr["meta"]["failure_example"].startswith("alpaca-6: no_logprobs")
        assert _count(store, "judgments") == 3


def test_options_are_declared_and_checked(pm, tmp_path):
    from tapir.errors import ConfigError

    component = registry().get("evaluators", "alpacaeval")
    with pytest.raises(ConfigError, match="unknown option 'judge_mdoe'.*Did you mean 'judge_mode'"):
        component.create(options={"judge_mdoe": "robust"})
    with pytest.raises(ConfigError, match="judge_mode"):
        component.create(options={"judge_mode": "lenient"})
    with pytest.raises(ConfigError, match="instruction_ids"):
        component.create(options={"instruction_ids": "three"})
    assert component.create(options={"instruction_ids": [1, "alpaca-7"]}).options.instruction_ids == [1, 7]
    problems = component.create(options={"data_path": str(tmp_path / "none.json"),
                                         "judge_options": {"api_base": "http://127.0.0.1:9/v1"}}).preflight("hf:nowhere-x")
    assert any("does not exist" in p for p in problems)
    robust = component.create(options={"judge_mode": "robust", "data_path": str(DATA), "judge_args": {"ordr": "x"},
                                       "judge_options": {"api_base": "http://127.0.0.1:9/v1"}})
    assert any("unknown option 'ordr'" in p for p in robust.preflight("openai/m"))
    with pytest.raises(TapirError, match="not in the set"):
        from tapir_alpacaeval.data import load_instructions

        load_instructions(DATA, instruction_ids=[99])


@pytest.mark.filterwarnings("ignore")
def test_reference_annotator_is_read_from_alpaca_eval():
    """The request body and the verdict tokens come from the installed
    alpaca_eval's annotator config, not from tapir."""
    pytest.importorskip("alpaca_eval.main", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from alpaca_eval import utils
    from alpaca_eval.constants import EVALUATORS_CONFIG_DIR

    from tapir.roles import Completion, TokenLogprob
    from tapir_alpacaeval.annotator import Pair, ReferenceAnnotator

    ann = ReferenceAnnotator()
    config = utils.load_configs(EVALUATORS_CONFIG_DIR / "weighted_alpaca_eval_gpt4_turbo" / "configs.yaml")
    kwargs = config["weighted_alpaca_eval_gpt4_turbo"]["completions_kwargs"]
    assert ann.body == {"model": kwargs["model_name"], "max_tokens": kwargs["max_tokens"],
                        "temperature": kwargs["temperature"], "top_p": 1.0, "logprobs": True,
                        "top_logprobs": kwargs["top_logprobs"]}
    params = ann.params()
    assert (params.max_new_tokens, params.temperature, params.top_p, params.top_logprobs) == (1, 1.0, 1.0, 5)
    assert ann.verdict_tokens() == ["m", "M"]
    [plan] = ann.plan([Pair("k", "Say hi", "hello", "hi there")])
    assert [m["role"] for m in plan.messages] == ["system", "user"] and '"""Say hi"""' in plan.messages[1]["content"]
    # leading-space tokens are not verdicts; bare ones are read whatever else is on top
    lp = [TokenLogprob(" m", -0.1, [(" m", -0.1), ("M", -2.0), ("m", -3.0), ("The", -4.0)])]
    verdict = ann.parse(Completion(text=" m", logprobs=lp))
    import math

    assert verdict.shown == pytest.approx(2 - math.exp(-3.0) / (math.exp(-3.0) + math.exp(-2.0)), abs=1e-12)
    assert ann.parse(Completion(text="m")).kind == "no_logprobs"
    assert ann.parse(Completion(text="x", logprobs=[TokenLogprob("x", 0.0, [("x", 0.0)])])).kind == "no_verdict_token"
    assert ann.parse(Completion(error="HTTP 500")).kind == "api_error"
    assert ann.unswap([("a", True, 1.25), ("b", False, 1.25)]) == {"a": 1.75, "b": 1.25}
