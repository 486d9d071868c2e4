"""Judges: prompts sent, parsing (lenient, with one nudge retry), both-order
averaging, logprob scoring, preference, and the offline judges."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from fakes import ScriptedBackend, digit_logprobs
from tapir.errors import TapirError
from tapir.judging import (
    average_orders,
    digit_distribution,
    expected_score,
    parse_pair,
    parse_rating,
    summarize,
)
from tapir.roles import Completion, JudgeRequest, Judgment, TokenLogprob

TEXTS = Path(__file__).parent / "data" / "judge_texts"


def recorded(name: str) -> str:
    return (TEXTS / name).read_text()


def make(name: str, backend, **options):
    from tapir.plugins import registry

    return registry().get("judges", name).create(backend, options=options)


def user_text(messages) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


class CountingBackend(ScriptedBackend):
    """A ScriptedBackend that also records each generate() batch size."""

    def __init__(self, reply, model_id="scripted"):
        super().__init__(reply, model_id)
        self.batches: list[int] = []

    def generate(self, requests, on_result=None):
        self.batches.append(len(requests))
        return super().generate(requests, on_result)


def tokens(*pieces) -> list[TokenLogprob]:
    """Logprobs for a completion: a piece is a token string (probability 1)
    or a dict {token: probability} whose most likely entry is the token."""
    out = []
    for piece in pieces:
        if isinstance(piece, dict):
            out += digit_logprobs(piece)
        else:
            out.append(TokenLogprob(piece, 0.0, [(piece, 0.0)]))
    return out


def text_of(logprobs) -> str:
    return "".join(t.token for t in logprobs)


# --------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Rating: [[8]]", 8.0),
        ("The answer is fine.\n\nRating: [[8.5]]", 8.5),
        ("[[ 6 ]]", 6.0),
        ("Verdict [7]", 7.0),
        ("Rating: 8", 8.0),
        ("rating: **9**", 9.0),
        ("Overall score: 4", 4.0),
        ("I would give it 8/10.", 8.0),
        ("A solid 7 out of 10", 7.0),
        ("score = 10", 10.0),
        ("5", 5.0),
        ("The example says [[5]] but my verdict is [[3]]", 3.0),  # the last verdict wins
        ("It lists 3 reasons and 2 examples.", None),
        ("Rating: [[0]]", None),  # out of range
        ("Rating: [[11]]", None),
        ("I give 18/10", None),
        ("", None),
    ],
)
def test_lenient_rating_variants(text, expected):
    found = parse_rating(text)
    assert (found.value if found else None) == expected
    if found:  # the span points at the number itself
        assert float(text[found.start : found.end]) == expected


def test_short_reply_accepts_any_number():
    assert parse_rating("I think 7") is None
    assert parse_rating("I think 7", short_reply=True).value == 7.0


@pytest.mark.parametrize(
    "name, expected",
    [
        ("pairwise_labelled.txt", (9.0, 2.0)),
        ("pairwise_first_line.txt", (8.0, 6.0)),
        ("pairwise_markdown.txt", (7.0, 4.0)),
        ("pairwise_unparseable.txt", None),
    ],
)
def test_pair_parsing_on_recorded_texts(name, expected):
    found = parse_pair(recorded(name))
    assert (None if found is None else (found[0].value, found[1].value)) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[[8, 6]]", (8.0, 6.0)),
        ("Explanation...\n7, 3", (7.0, 3.0)),
        ("Assistant A: 3\nAssistant B: 9", (3.0, 9.0)),
        ("Assistant 1 score: 8\nAssistant 2 score: 10", (8.0, 10.0)),
        ("Assistant 1's answer is 10 times better than Assistant 2's.", None),
    ],
)
def test_pair_parsing_variants(text, expected):
    found = parse_pair(text)
    assert (None if found is None else (found[0].value, found[1].value)) == expected


# --------------------------------------------------------------- expected scores


def test_expected_score_over_digit_logprobs():
    assert expected_score(digit_logprobs({"7": 0.5, "9": 0.5}), 0) == pytest.approx(8.0)
    # non-digit candidates are left out and the digits renormalised
    assert expected_score(digit_logprobs({"7": 0.3, "the": 0.4, "9": 0.1, "A": 0.2}), 0) == pytest.approx(7.5)
    # spaced and sentencepiece-marked tokens count as their digit; a "10" token counts as 10
    assert expected_score(digit_logprobs({" 6": 0.5, "\u25818": 0.25, "10": 0.25}), 0) == pytest.approx(7.5)
    assert expected_score(digit_logprobs({"hello": 1.0}), 0) is None


def test_expected_score_reads_10_as_1_then_0():
    # "1" chosen, then "0" with probability 0.8: P(10) = .6 * .8, P(1) = .6 * .2
    lps = digit_logprobs({"1": 0.6, "9": 0.4}) + digit_logprobs({"0": 0.8, "]": 0.2})
    dist = digit_distribution(lps, 0)
    assert dist[10] == pytest.approx(0.48) and dist[1] == pytest.approx(0.12) and dist[9] == pytest.approx(0.4)
    assert expected_score(lps, 0) == pytest.approx((10 * 0.48 + 0.12 + 9 * 0.4) / 1.0)


def test_average_orders_and_summarize():
    assert average_orders((9, 4), (7, 6)) == ((8, 5), 2)
    assert average_orders(None, (7, 6)) == ((7, 6), 1)
    assert average_orders(None, None) == (None, 0)
    js = [Judgment(score_a=1), Judgment(error="parse: x", details={"retried": True}),
          Judgment(score_a=2, details={"retried": True})]
    assert summarize(js) == {"n": 3, "ok": 2, "failed": 1, "retried": 2}


# --------------------------------------------------------------- mtbench-single


def test_mtbench_single_uses_installed_prompt_and_parses_rating():
    from tapir_judges.mtbench_prompts import load_prompts

    backend = CountingBackend(lambda m: recorded("single_rating.txt"))
    judge = make("mtbench-single", backend, judge_mode="robust")
    [j] = judge.judge([JudgeRequest("What is the capital of France?", "Paris.")])
    assert j.ok and j.score_a == 8.0 and j.details["prompt"] == "single-v1"
    assert j.raw == [recorded("single_rating.txt")] and j.details["retried"] is False
    prompt = load_prompts()["single-v1"]
    sent = backend.requests[0].messages
    assert sent[0] == {"role": "system", "content": prompt["system_prompt"]}
    assert sent[1]["content"] == prompt["prompt_template"].format(question="What is the capital of France?",
                                                                  answer="Paris.")
    assert backend.requests[0].params.max_new_tokens == 512 and backend.requests[0].params.temperature == 0


def test_mtbench_reference_guided_math_grading():
    from tapir_judges.mtbench_prompts import load_prompts

    backend = ScriptedBackend(lambda m: recorded("single_math_reference.txt"))
    judge = make("mtbench-single", backend, judge_mode="robust")
    request = JudgeRequest("Area of the triangle (0,0), (-1,1), (3,3)?", "The area is 6.",
                           reference="The area is 3.", category="math")
    [j] = judge.judge([request])
    assert j.score_a == 3.0 and j.details["prompt"] == "single-math-v1"
    expected = load_prompts()["single-math-v1"]["prompt_template"].format(
        question=request.question, answer="The area is 6.", ref_answer_1="The area is 3.")
    assert backend.requests[0].messages[1]["content"] == expected
    assert "The area is 3." in expected and "Reference Answer" in expected


def test_mtbench_math_without_reference_falls_back_and_says_so():
    backend = ScriptedBackend(lambda m: "Rating: [[4]]")
    [j] = make("mtbench-single", backend, judge_mode="robust").judge([JudgeRequest("2+2?", "5", category="math")])
    assert j.score_a == 4.0 and j.details["prompt"] == "single-v1" and j.details["missing_reference"] is True


def test_mtbench_multi_turn_prompt_for_two_turns():
    from tapir_judges.mtbench_prompts import load_prompts

    backend = ScriptedBackend(lambda m: recorded("single_multi_turn.txt"))
    judge = make("mtbench-single", backend, judge_mode="robust")
    turns = [{"question": "Write a haiku about the sea.", "answer": "Waves fold into foam..."},
             {"question": "Now say it like a pirate.", "answer": "Arr, the waves be foamin'..."}]
    math_turns = [{"question": "3*4?", "answer": "12", "reference": "12"},
                  {"question": "Now times 2?", "answer": "25", "reference": "24"}]
    [j, jm] = judge.judge([JudgeRequest(turns[1]["question"], turns[1]["answer"], turns=turns),
                           JudgeRequest("Now times 2?", "25", turns=math_turns, category="math")])
    assert j.score_a == 9.0 and j.details["prompt"] == "single-v1-multi-turn"
    assert jm.details["prompt"] == "single-math-v1-multi-turn"
    prompts = load_prompts()
    sent, sent_math = backend.requests[0].messages, backend.requests[1].messages
    assert sent[0]["content"] == prompts["single-v1-multi-turn"]["system_prompt"]
    assert "Now say it like a pirate." in sent[1]["content"] and "Arr, the waves" in sent[1]["content"]
    assert sent_math[0]["content"] == prompts["single-math-v1-multi-turn"]["system_prompt"]
    assert "### Reference answer:\n24" in sent_math[1]["content"]


def test_mtbench_prompts_path_option(tmp_path):
    with pytest.raises(TapirError, match="not found"):
        make("mtbench-single", ScriptedBackend(lambda m: ""), prompts_path=str(tmp_path / "missing.jsonl"))


# --------------------------------------------------------------- parse failures


def test_unparseable_then_fixed_by_nudge_in_one_batched_retry():
    def reply(messages):
        if len(messages) > 2:  # the nudge round
            return "Rating: [[6]]"
        return recorded("single_no_rating.txt") if "poem" in user_text(messages) else "Rating: [[9]]"

    backend = CountingBackend(reply)
    judge = make("mtbench-single", backend, judge_mode="robust")
    requests = [JudgeRequest("Write a short poem.", "Roses..."), JudgeRequest("Q2", "A2"),
                JudgeRequest("Another poem please.", "Violets...")]
    js = judge.judge(requests)
    assert backend.batches == [3, 2]  # one call for all, one for the two retries
    assert [j.score_a for j in js] == [6.0, 9.0, 6.0]
    assert [j.details["retried"] for j in js] == [True, False, True]
    assert js[0].raw == [recorded("single_no_rating.txt"), "Rating: [[6]]"]
    nudged = backend.requests[3].messages
    assert nudged[:2] == backend.requests[0].messages
    assert nudged[2] == {"role": "assistant", "content": recorded("single_no_rating.txt")}
    assert nudged[3]["role"] == "user" and "[[5]]" in nudged[3]["content"]
    assert summarize(js) == {"n": 3, "ok": 3, "failed": 0, "retried": 2}


def test_unparseable_twice_is_an_error_with_both_texts():
    answers = iter([recorded("single_no_rating.txt"), "Still no number here."])
    backend = ScriptedBackend(lambda m: next(answers))
    [j] = make("mtbench-single", backend, judge_mode="robust").judge([JudgeRequest("Write a short poem.", "Roses...")])
    assert not j.ok and j.error.startswith("parse:") and j.score_a is None
    assert j.raw == [recorded("single_no_rating.txt"), "Still no number here."]
    assert j.details["retried"] is True and len(backend.requests) == 2


def test_backend_error_is_recorded_not_retried():
    backend = CountingBackend(lambda m: Completion(error="HTTP 500: server exploded"))
    js = make("mtbench-single", backend, judge_mode="robust").judge([JudgeRequest("Q", "A")])
    assert js[0].error == "backend: HTTP 500: server exploded" and js[0].score_a is None
    assert backend.batches == [1]
    assert summarize(js)["failed"] == 1


def test_params_option_overrides_and_rejects_unknown():
    backend = ScriptedBackend(lambda m: "[[7]]")
    make("mtbench-single", backend, judge_mode="robust", params={"max_new_tokens": 64}).judge([JudgeRequest("Q", "A")])
    assert backend.requests[0].params.max_new_tokens == 64
    with pytest.raises(TapirError, match="max_tokens"):
        make("mtbench-single", backend, judge_mode="robust", params={"max_tokens": 5})


def test_nudge_changes_the_cache_key(store):
    from tapir.cache import CachedBackend

    answers = {"first": "no score", "nudged": "Rating: [[5]]"}
    raw = ScriptedBackend(lambda m: answers["nudged" if len(m) > 2 else "first"])
    judge = make("mtbench-single", CachedBackend(raw, store), judge_mode="robust")
    [j] = judge.judge([JudgeRequest("Q", "A")])
    assert j.score_a == 5.0 and len(raw.requests) == 2
    # a re-run is served from the cache: the same two prompts, no new calls
    [again] = make("mtbench-single", CachedBackend(raw, store), judge_mode="robust").judge([JudgeRequest("Q", "A")])
    assert again.score_a == 5.0 and again.raw == j.raw and len(raw.requests) == 2


# --------------------------------------------------------------- logprob scoring


def test_mtbench_single_reads_expected_value_from_logprobs():
    lps = tokens("Rating", ":", " [[", {"7": 0.5, "9": 0.5}, "]]")
    backend = ScriptedBackend(lambda m: Completion(text=text_of(lps), logprobs=lps))
    [j] = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True).judge([JudgeRequest("Q", "A")])
    assert j.score_a == pytest.approx(8.0) and j.details["logprobs"] is True and j.details["parsed"] == 7.0
    assert backend.requests[0].params.top_logprobs == 20


def test_logprob_mode_falls_back_to_text_without_logprobs():
    backend = ScriptedBackend(lambda m: "Rating: [[7]]")
    [j] = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True).judge([JudgeRequest("Q", "A")])
    assert j.score_a == 7.0 and j.details["logprobs"] is False


def test_score_only_mode_for_small_models():
    lps = tokens({"6": 0.25, "8": 0.75})
    backend = ScriptedBackend(lambda m: Completion(text=text_of(lps), logprobs=lps))
    [j] = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True, score_only=True).judge([JudgeRequest("Q", "A")])
    assert j.score_a == pytest.approx(7.5)
    assert backend.requests[0].params.max_new_tokens == 16
    assert user_text(backend.requests[0].messages).endswith("[[5]].")


def test_score_only_reads_first_token_digits_when_no_number_is_written():
    # a small model that starts "The ..." but gives the digits some mass at its first token
    lps = [TokenLogprob("The", math.log(0.8), [("The", math.log(0.8)), ("7", math.log(0.1)), ("9", math.log(0.1))]),
           TokenLogprob(" answer", 0.0, [])]
    backend = ScriptedBackend(lambda m: Completion(text="The answer", logprobs=lps))
    [j] = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True, score_only=True).judge([JudgeRequest("Q", "A")])
    assert j.score_a == pytest.approx(8.0) and j.details["first_token"] is True
    assert j.details["digit_mass"] == pytest.approx(0.2) and j.details["parsed"] is None
    assert len(backend.requests) == 1  # no retry needed
    # with the explanation prompt a reply without a rating is a parse failure
    [k] = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True).judge([JudgeRequest("Q", "A")])
    assert k.error.startswith("parse:")


def test_pairwise_reads_both_scores_from_logprobs():
    lps = tokens("Fine.\n", "Assistant", " 1", ":", " ", {"8": 0.5, "6": 0.5}, "\n",
                 "Assistant", " 2", ":", " ", {"1": 0.5, "3": 0.5}, {"0": 1.0 - 1e-9})
    # Score 1 is E = 7. Score 2: "1" then "0" (p~1) -> 10 with p .5, and 3 with p .5 -> 6.5
    backend = ScriptedBackend(lambda m: Completion(text=text_of(lps), logprobs=lps))
    [j] = make("pairwise", backend, use_logprobs=True, both_orders=False).judge([JudgeRequest("Q", "a", "b")])
    assert j.score_a == pytest.approx(7.0) and j.score_b == pytest.approx(6.5)
    assert j.details["logprobs"] is True


# --------------------------------------------------------------- pairwise


_SHOWN = {
    "table8": r"\[The Start of Assistant {n}'s Answer\]\n(.*?)\n\[The End of Assistant {n}'s Answer\]",
    "tapir": r"### Answer of Assistant {n}\n(.*?)\n\n###",
}


def shown_answers(text: str) -> tuple[str, str]:
    """The (first, second) answers a pairwise prompt shows, in either prompt's layout."""
    for pattern in _SHOWN.values():
        first = re.search(pattern.format(n=1), text, re.S)
        if first:
            return first.group(1), re.search(pattern.format(n=2), text, re.S).group(1)
    raise AssertionError(f"not a pairwise prompt: {text[:200]}")


def biased_pairwise_judge(quality: dict[str, float], bias: float = 2.0, table8: bool = True):
    """A scripted judge that knows each answer's true quality and adds
    ``bias`` to whichever answer it sees first; it answers in Table 8's
    format, or in tapir's when ``table8`` is False."""

    def reply(messages):
        first, second = shown_answers(user_text(messages))
        label = "Score of the Assistant" if table8 else "Assistant"
        return (f"Evaluation evidence: explanation.\n{label} 1: {quality[first] + bias:g}\n"
                f"{label} 2: {quality[second]:g}")

    return reply


@pytest.mark.parametrize("prompt", ["table8", "tapir"])
def test_pairwise_both_orders_cancel_position_bias(prompt):
    quality = {"Paris is the capital.": 7.0, "Berlin is the capital.": 4.0}
    backend = CountingBackend(biased_pairwise_judge(quality, table8=prompt == "table8"))
    judge = make("pairwise", backend, prompt=prompt)
    [j] = judge.judge([JudgeRequest("Capital of France?", "Paris is the capital.", "Berlin is the capital.")])
    # ab: (9, 4); ba shown (Berlin, Paris): (6, 7) -> mapped (7, 6); mean (8, 5)
    assert (j.score_a, j.score_b) == (8.0, 5.0)
    assert j.score_a - j.score_b == quality["Paris is the capital."] - quality["Berlin is the capital."]
    assert j.details["orders"] == {"ab": [9.0, 4.0], "ba": [7.0, 6.0]} and j.details["orders_used"] == 2
    assert j.details["prompt"] == prompt
    assert j.details["parsed_by"] == {"ab": "table8" if prompt == "table8" else "lenient",
                                      "ba": "table8" if prompt == "table8" else "lenient"}
    assert backend.batches == [2] and len(j.raw) == 2
    assert set(j.details["raw_by_order"]) == {"ab", "ba"}
    # one order only: the bias is NOT cancelled (the reason both orders is the default)
    [single] = make("pairwise", backend, both_orders=False, prompt=prompt).judge(
        [JudgeRequest("Capital of France?", "Paris is the capital.", "Berlin is the capital.")])
    assert single.score_a - single.score_b == 5.0


def test_pairwise_default_prompt_is_table8():
    backend = ScriptedBackend(lambda m: recorded("pairwise_table8.txt"))
    [j] = make("pairwise", backend, both_orders=False).judge([JudgeRequest("Q?", "first answer", "second answer")])
    assert (j.score_a, j.score_b) == (9.0, 2.0) and j.details["parsed_by"] == {"ab": "table8"}
    system, user = backend.requests[0].messages
    assert system["role"] == "system" and "precise assistant" in system["content"] and "quality" not in user["content"]
    text = user["content"]
    # the instruction and both answers between the table's markers, in order
    assert text.startswith("[Instruction]\nQ?\n")
    assert shown_answers(text) == ("first answer", "second answer")
    assert text.index("[The End of Assistant 2's Answer]") < text.index("[System]")
    # every instruction of the table, and its output format word for word
    for phrase in ("helpfulness, relevance, accuracy and level of detail", "scale from 1 to 10",
                   "higher score means better overall performance", "explanation of your evaluation",
                   "bias", "order in which the responses were shown", "two lines"):
        assert phrase in text, phrase
    assert text.endswith("Evaluation evidence: <your evaluation explanation here>\n"
                         "Score of the Assistant 1: <score>\nScore of the Assistant 2: <score>")


@pytest.mark.parametrize(
    "reply, expected, parsed_by",
    [
        ("Evaluation evidence: fine.\nScore of the Assistant 1: 8\nScore of the Assistant 2: 6.5", (8.0, 6.5), "table8"),
        ("Evaluation evidence: x\n**Score of the Assistant 1:** 7/10\n**Score of the Assistant 2:** 3/10",
         (7.0, 3.0), "table8"),
        # the format quoted in the explanation, then the real verdict: the last lines win
        ("Evaluation evidence: as 'Score of the Assistant 1: <score>' asks...\nscore of the assistant 1: 4\n"
         "Score of the Assistant 2: 9", (4.0, 9.0), "table8"),
        # not the table's format: read by the lenient parser, and recorded so
        ("Evaluation evidence: both fine.\nAssistant 1: 8\nAssistant 2: 7", (8.0, 7.0), "lenient"),
        ("Scores: [[6, 4]]", (6.0, 4.0), "lenient"),
    ],
)
def test_pairwise_table8_format_first_then_lenient(reply, expected, parsed_by):
    [j] = make("pairwise", ScriptedBackend(lambda m: reply), both_orders=False).judge([JudgeRequest("Q", "a", "b")])
    assert (j.score_a, j.score_b) == expected and j.details["parsed_by"] == {"ab": parsed_by}
    assert j.details["retried"] is False


def test_pairwise_table8_out_of_range_falls_back_and_nudges():
    replies = iter(["Evaluation evidence: x\nScore of the Assistant 1: 11\nScore of the Assistant 2: 0",
                    "Score of the Assistant 1: 6\nScore of the Assistant 2: 5"])
    backend = ScriptedBackend(lambda m: next(replies))
    [j] = make("pairwise", backend, both_orders=False).judge([JudgeRequest("Q", "a", "b")])
    assert (j.score_a, j.score_b) == (6.0, 5.0) and j.details["retried"] is True
    nudge = backend.requests[1].messages[-1]["content"]
    assert "Score of the Assistant 1: <score>\nScore of the Assistant 2: <score>" in nudge


def test_pairwise_options_are_declared_and_checked():
    from tapir.errors import ConfigError

    judge = make("pairwise", ScriptedBackend(lambda m: ""), params={"max_new_tokens": 64})
    assert judge.params.max_new_tokens == 64 and judge.params.temperature == 0.0
    assert judge.needs_student is False and judge.reads_student_answer is True
    with pytest.raises(ConfigError, match="prompt"):
        make("pairwise", ScriptedBackend(lambda m: ""), prompt="mtbench")
    with pytest.raises(ConfigError, match="unknown option 'temperature'"):
        make("pairwise", ScriptedBackend(lambda m: ""), temperature=0.0)  # generation settings come via params
    with pytest.raises(ConfigError, match="top_k"):
        make("pairwise", ScriptedBackend(lambda m: ""), params={"top_k": 5})
    short = make("pairwise", ScriptedBackend(lambda m: ""), score_only=True)
    assert short.params.max_new_tokens == 24


def test_pairwise_score_only_table8_prompt():
    backend = ScriptedBackend(lambda m: "Score of the Assistant 1: 7\nScore of the Assistant 2: 7")
    [j] = make("pairwise", backend, score_only=True, both_orders=False).judge([JudgeRequest("Q", "a", "b")])
    assert (j.score_a, j.score_b) == (7.0, 7.0)
    text = user_text(backend.requests[0].messages)
    assert "Evaluation evidence" not in text and "two score lines only" in text


def test_pairwise_prompt_wording():
    backend = ScriptedBackend(lambda m: recorded("pairwise_labelled.txt"))
    make("pairwise", backend, both_orders=False, prompt="tapir").judge(
        [JudgeRequest("Q?", "first answer", "second answer")])
    text = user_text(backend.requests[0].messages)
    for phrase in ("helpful", "relevant", "accurate", "detailed", "order", "1 to 10",
                   "Assistant 1: <score>\nAssistant 2: <score>"):
        assert phrase in text
    assert text.index("first answer") < text.index("second answer")


@pytest.mark.parametrize("prompt", ["table8", "tapir"])
def test_pairwise_one_order_unparseable_uses_the_other(prompt):
    good = recorded("pairwise_table8.txt" if prompt == "table8" else "pairwise_labelled.txt")

    def reply(messages):
        text = user_text(messages)
        if len(messages) > 2 or text.index("bad") < text.index("good"):  # the ba order, and its retry
            return recorded("pairwise_unparseable.txt")
        return good

    judge = make("pairwise", ScriptedBackend(reply), prompt=prompt)
    [j] = judge.judge([JudgeRequest("Q", "good", "bad")])
    assert j.ok and (j.score_a, j.score_b) == (9.0, 2.0) and j.details["orders_used"] == 1
    assert j.details["order_errors"]["ba"].startswith("parse:") and j.details["retried"] is True
    assert len(j.raw) == 3  # ab text, ba text, ba retry text
    [strict] = make("pairwise", ScriptedBackend(reply), require_both=True, prompt=prompt).judge(
        [JudgeRequest("Q", "good", "bad")])
    assert strict.error.startswith("parse:") and strict.score_a is None


def test_pairwise_neither_order_parses_is_an_error():
    backend = ScriptedBackend(lambda m: recorded("pairwise_unparseable.txt"))
    [j] = make("pairwise", backend).judge([JudgeRequest("Q", "x", "y")])
    assert j.error.startswith("parse:") and j.score_a is None and j.score_b is None
    assert len(j.raw) == 4 and len(backend.requests) == 4


def test_pairwise_backend_error_wins_over_parse_error():
    def reply(messages):
        text = user_text(messages)
        if text.index("y-answer") < text.index("x-answer"):
            return Completion(error="timeout")
        return "no scores"

    [j] = make("pairwise", ScriptedBackend(reply)).judge([JudgeRequest("Q", "x-answer", "y-answer")])
    assert j.error == "backend: timeout"


# --------------------------------------------------------------- preference


def test_preference_from_logprobs_normalised_over_verdicts():
    backend = CountingBackend(lambda m: Completion(text="B", logprobs=digit_logprobs({"B": 0.6, "A": 0.2, "C": 0.2})))
    [j] = make("preference", backend, order="fixed").judge([JudgeRequest("Q", "reference output", "model output")])
    assert j.preference == pytest.approx(0.75) and j.details["weighted"] is True
    params = backend.requests[0].params
    assert params.max_new_tokens == 1 and params.top_logprobs == 5
    text = user_text(backend.requests[0].messages)
    assert text.index("reference output") < text.index("model output")


def test_preference_random_order_maps_back():
    # The judge gives 0.9 to whichever letter shows the model's output.
    def reply(messages):
        text = user_text(messages)
        model_is_b = text.index("MODEL") > text.index("REF")
        return Completion(text="B" if model_is_b else "A",
                          logprobs=digit_logprobs({"B": 0.9, "A": 0.1} if model_is_b else {"A": 0.9, "B": 0.1}))

    backend = ScriptedBackend(reply)
    requests = [JudgeRequest(f"question {i}", f"REF {i}", f"MODEL {i}") for i in range(12)]
    js = make("preference", backend).judge(requests)
    assert all(j.preference == pytest.approx(0.9) for j in js)
    swaps = [j.details["swapped"] for j in js]
    assert any(swaps) and not all(swaps)  # both orders occur
    both = make("preference", backend, order="both").judge(requests[:1])
    assert both[0].preference == pytest.approx(0.9) and both[0].details["orders_used"] == 2


def test_preference_from_text():
    verdicts = {"q1": "B", "q2": "A", "q3": "Output B is better.", "q4": "It's a tie.", "q5": "**A**"}
    backend = ScriptedBackend(lambda m: verdicts[re.search(r"### Instruction\n(\w+)", user_text(m)).group(1)])
    js = make("preference", backend, order="fixed", use_logprobs=False).judge(
        [JudgeRequest(q, "ref", "model") for q in verdicts])
    assert [j.preference for j in js] == [1.0, 0.0, 1.0, 0.5, 0.0]
    assert all(j.details["weighted"] is False for j in js)
    assert backend.requests[0].params.top_logprobs == 0


def test_preference_unparseable_after_retry_is_an_error():
    backend = ScriptedBackend(lambda m: "Well,")
    [j] = make("preference", backend, order="fixed").judge([JudgeRequest("Q", "ref", "model")])
    assert j.preference is None and j.error.startswith("parse:") and j.raw == ["Well,", "Well,"]


def test_preference_nudge_fixes_a_bad_verdict():
    backend = ScriptedBackend(lambda m: "B" if len(m) > 2 else "Hmm")
    [j] = make("preference", backend, order="fixed", use_logprobs=False).judge([JudgeRequest("Q", "r", "m")])
    assert j.preference == 1.0 and j.details["retried"] is True


# --------------------------------------------------------------- offline judges


def test_reference_similarity_on_minilm_embeddings():
    judge = make("reference-similarity", None)
    teacher = "The capital of France is Paris."
    right, wrong = judge.judge([JudgeRequest("Capital of France?", teacher, "Paris is the capital of France."),
                                JudgeRequest("Capital of France?", teacher, "Berlin is a city in Germany.")])
    assert right.score_a == wrong.score_a == 10.0
    assert right.details["similarity"] > wrong.details["similarity"] + 0.3
    assert 1.0 <= wrong.score_b < right.score_b <= 10.0
    assert right.score_b == pytest.approx(1 + 9 * right.details["similarity"])
    [same] = judge.judge([JudgeRequest("Q", teacher, teacher)])
    assert same.score_b == pytest.approx(10.0, abs=1e-3)


def test_reference_similarity_rouge_mode():
    judge = make("reference-similarity", None, method="rouge")
    same, disjoint, empty = judge.judge([
        JudgeRequest("Q", "the cat sat on the mat", "the cat sat on the mat"),
        JudgeRequest("Q", "the cat sat on the mat", "quantum chromodynamics explained"),
        JudgeRequest("Q", "the cat sat on the mat", "   "),
    ])
    assert same.score_b == pytest.approx(10.0) and disjoint.score_b == pytest.approx(1.0)
    assert empty.score_b == 1.0 and empty.details["empty"] is True
    [half] = judge.judge([JudgeRequest("Q", "a b c d", "a b x y")])  # LCS 2: P = R = F = .5
    assert half.score_b == pytest.approx(1 + 9 * 0.5)
    with pytest.raises(TapirError):
        make("reference-similarity", None, method="bleu")


class FakeScorer:
    model_id = "fake-student"

    def __init__(self, per_token):
        self.per_token = per_token
        self.calls = []

    def generate(self, requests, on_result=None):
        raise AssertionError("student-loss must not generate")

    def score(self, prompts, continuations):
        self.calls.append((list(prompts), list(continuations)))
        if any("TOO LONG" in c for c in continuations):
            raise TapirError("score: continuation too long")
        return [self.per_token[c] for c in continuations]


def test_student_loss_with_a_fake_scorer():
    scorer = FakeScorer({"teacher one": [-1.0, -1.0], "teacher two": [-0.1, -0.3]})
    judge = make("student-loss", scorer)
    assert judge.needs_student is True
    a, b = judge.judge([JudgeRequest("q1", "teacher one", "student"), JudgeRequest("q2", "teacher two", None)])
    assert a.score_a == 10.0 and a.score_b == pytest.approx(10 * math.exp(-1.0)) and a.details["nll"] == 1.0
    assert b.score_b == pytest.approx(10 * math.exp(-0.2))
    assert len(scorer.calls) == 1  # batched
    assert scorer.calls[0][0][0] == [{"role": "user", "content": "q1"}]


def test_student_loss_isolates_a_failing_item():
    scorer = FakeScorer({"fine": [-0.5]})
    ok, bad = make("student-loss", scorer).judge([JudgeRequest("q", "fine"), JudgeRequest("q", "TOO LONG")])
    assert ok.score_b == pytest.approx(10 * math.exp(-0.5))
    assert bad.error.startswith("backend:") and bad.score_b is None


def test_student_loss_needs_a_scoring_backend():
    with pytest.raises(TapirError, match="score"):
        make("student-loss", ScriptedBackend(lambda m: ""))


def test_student_loss_on_tiny_model(tiny_model):
    pytest.importorskip("tapir_hf.backend")
    from tapir.models import load_backend

    backend = load_backend("hf:" + str(tiny_model))
    judge = make("student-loss", backend)
    js = judge.judge([JudgeRequest("Say hello.", "Hello there, how are you?"), JudgeRequest("Count.", "one two three")])
    for j in js:
        assert j.ok, j.error
        assert 0.0 < j.score_b < 10.0 and j.details["tokens"] > 0
        assert j.score_b == pytest.approx(10 * math.exp(-j.details["nll"]))
    # the same numbers as the backend's own per-token logprobs
    lps = backend.score([[{"role": "user", "content": "Count."}]], ["one two three"])[0]
    assert js[1].details["nll"] == pytest.approx(-sum(lps) / len(lps))


# --------------------------------------------------------------- over real HTTP


def test_pairwise_and_preference_through_litellm_and_local_server(store):
    pytest.importorskip("litellm")
    backend_mod = pytest.importorskip("tapir_litellm.backend")
    from tapir.cache import CachedBackend
    from tapir_testing.openai_server import OpenAIServer, token_distribution

    def reply(messages, body):
        text = user_text(messages)
        if "### Output A" in text:  # preference: the model's output (MODEL) is better
            model_is_b = text.index("MODEL") > text.index("REF")
            dist = {"B": 0.8, "A": 0.2} if model_is_b else {"A": 0.8, "B": 0.2}
            return {"text": "B" if model_is_b else "A", "logprobs": token_distribution(dist)}
        first, _ = shown_answers(text)
        return ("Evaluation evidence: good.\nScore of the Assistant 1: 9\nScore of the Assistant 2: 5"
                if first.startswith("MODEL") else
                "Evaluation evidence: hmm.\nScore of the Assistant 1: 6\nScore of the Assistant 2: 8")

    with OpenAIServer(reply=reply) as srv:
        raw = backend_mod.LiteLLMBackend("openai/judge", backend_mod.LiteLLMBackend.Options(
            api_base=srv.base_url, concurrency=4, max_retries=1))
        cached = CachedBackend(raw, store)
        pairs = make("pairwise", cached).judge([JudgeRequest(f"q{i}", f"MODEL {i}", f"REF {i}") for i in range(3)])
        for j in pairs:  # ab: (9, 5); ba shown (REF, MODEL): (6, 8) -> (8, 6); mean (8.5, 5.5)
            assert (j.score_a, j.score_b) == (8.5, 5.5), j
        prefs = make("preference", cached).judge([JudgeRequest(f"q{i}", f"REF {i}", f"MODEL {i}") for i in range(4)])
        for j in prefs:
            assert j.preference == pytest.approx(0.8) and j.details["weighted"] is True
        sent = len(srv.bodies)
        assert sent == 6 + 4
        make("pairwise", CachedBackend(raw, store)).judge([JudgeRequest(f"q{i}", f"MODEL {i}", f"REF {i}")
                                                           for i in range(3)])
        assert len(srv.bodies) == sent  # the cache answered


# --------------------------------------------------------------- the real embedded model


@pytest.mark.slow
def test_judges_on_the_embedded_smollm2(store):
    """SmolLM2-135M judging in logprob mode: every judgment is a score in
    range or a recorded parse failure (never a NaN or a silent 0), and a
    re-run is served from the cache."""
    from tapir.models import load_cached

    backend = load_cached("smollm2-135m-instruct", store)
    requests = [JudgeRequest("What is the capital of France?", "The capital of France is Paris.",
                             "Berlin is the capital of France.")]
    single = make("mtbench-single", backend, judge_mode="robust", use_logprobs=True, score_only=True,
                  params={"max_new_tokens": 4}).judge(requests)
    pref = make("preference", backend).judge(requests)
    for j in single:
        assert (j.ok and 1.0 <= j.score_a <= 10.0) or j.error.startswith("parse:"), j
        assert j.raw  # the judge's text is kept either way
    for j in pref:
        assert (j.ok and 0.0 <= j.preference <= 1.0) or j.error.startswith("parse:"), j
    counts = summarize(single + pref)
    assert counts["ok"] + counts["failed"] == counts["n"] == 2
    again = load_cached("smollm2-135m-instruct", store)
    rerun = make("mtbench-single", again, judge_mode="robust", use_logprobs=True, score_only=True,
                 params={"max_new_tokens": 4}).judge(requests)
    assert again.calls_made == 0 and [j.score_a for j in rerun] == [j.score_a for j in single]
