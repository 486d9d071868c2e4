"""AlpacaEval runner: data loading, answers through the tiny model, the
preference judge over a local OpenAI-compatible server with preferences
scripted per instruction (logprob-weighted and plain), order
randomisation, win rate and stderr, LC win rate against alpaca_eval's own
function, failures, re-runs."""

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
    from tapir_alpacaeval.runner import model_first, p_model as mapped

    assert mapped("ab", 0.8) == 0.8 and mapped("ba", 0.8) == pytest.approx(0.2)
    from tapir_alpacaeval.runner import judge_preference
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
def test_alpacaeval_end_to_end(pm, store, tiny_model, monkeypatch, tmp_path):
    pytest.importorskip("alpaca_eval.metrics", reason="alpaca-eval==0.6.6 (the bench extra) is not installed")
    from tapir_testing.openai_server import OpenAIServer

    model = f"hf:{tiny_model}"
    evaluator = registry().get("evaluators", "alpacaeval").create()
    with OpenAIServer(reply=_reply) as srv:
        rows = _rows(evaluator.run(model, store, run_id="a1", **_options(srv)))
        assert srv.requests == N + 1  # one re-ask for the instruction with no verdict

        # the order was randomised: both positions shown, as model_first says
        from tapir_alpacaeval.runner import model_first

        positions = dict(store.execute("select item_id, position from judgments").fetchall())
        assert positions == {f"alpaca-{i}": "ba" if model_first(0, f"alpaca-{i}") else "ab" for i in range(N)}
        assert set(positions.values()) == {"ab", "ba"}
        for body in srv.bodies:
            assert body.get("logprobs")

        prefs = expected_prefs()
        n = len(prefs)
        mean = sum(prefs) / n
        sd = (sum((p - mean) ** 2 for p in prefs) / (n - 1)) ** 0.5
        wr = rows[("alpaca_eval", "win_rate")]
        assert wr["n"] == 19
        assert wr["value"] == pytest.approx(mean * 100, abs=1e-6)
        assert wr["stderr"] == pytest.approx(sd / n ** 0.5 * 100, abs=1e-6)
        assert wr["meta"]["weighted_preferences"] == 19 - len(PLAIN)
        assert rows[("judge", "failures")]["value"] == 1 and rows[("judge", "failures")]["n"] == 20
        assert rows[("generation", "failures")]["value"] == 0
        discrete = sum(1.0 if p > 0.5 else 0.0 for p in prefs) / n * 100
        assert rows[("alpaca_eval", "discrete_win_rate")]["value"] == pytest.approx(discrete)
        koala = [p_model(i) if i not in PLAIN else float(p_model(i) > 0.5) for i in range(0, N, 2) if i != FAIL]
        assert rows[("dataset/koala", "win_rate")]["value"] == pytest.approx(sum(koala) / len(koala) * 100)

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
        lc = rows[("alpaca_eval", "length_controlled_winrate")]
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
        again = _rows(evaluator.run(model, store, run_id="a1", **_options(srv)))
        assert srv.requests == N + 1
        assert {t: _count(store, t) for t in counts} == counts
        assert again[("alpaca_eval", "win_rate")]["value"] == pytest.approx(wr["value"])
        assert again[("alpaca_eval", "length_controlled_winrate")]["value"] == pytest.approx(lc["value"])


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
