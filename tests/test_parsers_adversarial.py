"""Every judge and classifier parser against adversarial replies: a number
is read only where the reply states it (never out of a scale, a range, a
fraction over something else, a negative number or a list of numbers), and
each case asserts the value or a parse failure (``None``).

Parsers: tapir.judging.parse_rating (robust MT-Bench mode, also short
replies), tapir.judging.parse_pair (the pairwise judge's lenient parser),
tapir_judges.pairwise.parse_table8 (the paper's Table 8 format),
tapir_judges.mtbench_prompts.reference_rating (FastChat's parser, kept
reference-exact: it reads what FastChat reads, including its out-of-range
numbers), tapir_judges.preference.parse_verdict_text, and the classifier's
LabelParser / parse_reasoned.
"""

from __future__ import annotations

import pytest

from tapir.judging import mask_scales, parse_pair, parse_rating

from tapir_classifiers.llm import LabelParser, parse_reasoned
from tapir_judges.mtbench_prompts import reference_rating
from tapir_judges.pairwise import parse_table8
from tapir_judges.preference import parse_verdict_text

# ------------------------------------------------------------------ one rating

RATING_CASES = [
    # the cases, seen against FastChat's own server
    ("I'll provide a rating of 1 to 10.", None),
    ("Rating of 1 to 10: 7", 7.0),
    ("Based on the criteria, on a rating of 1 to 10, I would say 8", 8.0),
    ("Give a score of 1-10", None),
    # scales and ranges are not ratings
    ("On a scale of 1-10, the answer is helpful.", None),
    ("On a scale of 1 - 10 I cannot decide.", None),
    ("Please rate out of 10.", None),
    ("Out of 10, I give it 7", None),  # "it 7" states no rating in any format we read
    ("Rating: 7-8", None),  # a range given instead of a number
    ("Rating: 7 to 8", None),
    ("Rating: between 6 and 8", None),
    ("This deserves a rating on a 10-point scale.", None),
    ("Rating: 8 (on a scale of 1 to 10)", 8.0),
    ("Rating (1-10): 6", 6.0),
    # the accepted formats
    ("[[8]]", 8.0),
    ("Rating: [[8]]", 8.0),
    ("[[8/10]]", 8.0),
    ("8/10", 8.0),
    ("I would give it 8/10.", 8.0),
    ("A solid 7 out of 10.", 7.0),
    ("**Rating:** 8", 8.0),
    ("**Rating: 9**", 9.0),
    ("Rating: **7**/10", 7.0),
    ("score = 10", 10.0),
    ("Rating: 7.5", 7.5),
    ("Rating: [[6.5]]", 6.5),
    ("9", 9.0),
    # several numbers: the last verdict of the first matching format
    ("The format is [[5]]; my verdict: [[3]]", 3.0),
    ("Score: 4. On reflection, score: 6", 6.0),
    ("It lists 3 reasons and 2 examples.", None),
    ("I'd give it 7 or 8.", None),
    # numbers out of range are no rating, and a stated one is not replaced by another
    ("Rating: [[11]]", None),
    ("Rating: [[0]]", None),
    ("Rating: 12", None),
    ("I give 18/10", None),
    ("Rating: [[12]] (the answer has 3 typos)", None),
    # fractions over anything but 10
    ("Rating: 4/5", None),
    ("Score: 85/100", None),
    ("4 out of 5", None),
    # negative numbers
    ("Rating: -3", None),
    ("-3", None),
    ("[[-3]]", None),
    # refusals
    ("I'm sorry, but I cannot rate this response.", None),
    ("As an AI, I can't give a score of 1 to 10 to this.", None),
    ("", None),
]


@pytest.mark.parametrize("text, expected", RATING_CASES)
def test_parse_rating_reads_only_a_stated_rating(text, expected):
    found = parse_rating(text)
    assert (found.value if found else None) == expected
    if found:  # the span points at the number itself, in the original text
        assert float(text[found.start : found.end]) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I think 7", 7.0),  # the one number in a short reply
        ("8\n\nThe answer has 3 flaws.", 8.0),  # the first line is the number
        ("7 or 8", None),  # two numbers: no rating
        ("I think 7, maybe 6", None),
        ("1-10", None),
        ("Out of 10: 6", 6.0),
        ("-4", None),
        ("14", None),
        ("No rating.", None),
    ],
)
def test_parse_rating_short_reply(text, expected):
    found = parse_rating(text, short_reply=True)
    assert (found.value if found else None) == expected


def test_mask_scales_keeps_offsets_and_masks_only_scales():
    text = "Rating of 1 to 10: 7 and 8/10, not 8-6"
    masked = mask_scales(text)
    assert len(masked) == len(text)
    assert masked[masked.index(":") + 2] == "7"
    assert "1 to 10" not in masked and "/10" not in masked and "8/" in masked
    assert masked.endswith("8-6")  # a falling pair is no range: it may be two scores


# ------------------------------------------------------------------ two scores


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Assistant 1: 8\nAssistant 2: 6", (8.0, 6.0)),
        ("**Assistant 1**: 8/10\n**Assistant 2**: 6/10", (8.0, 6.0)),
        ("Assistant 1: **7.5**\nAssistant 2: **6**", (7.5, 6.0)),
        ("Assistant A: 3\nAssistant B: 9", (3.0, 9.0)),
        ("Assistant 1 - 8\nAssistant 2 - 6", (8.0, 6.0)),
        ("[[8, 6]]", (8.0, 6.0)),
        ("Scores (1-10):\n8 6", (8.0, 6.0)),
        ("Explanation with 3 points.\n7, 3", (7.0, 3.0)),
        # several verdicts: the last
        ("Assistant 1: 5\nAssistant 2: 5\nRevised:\nAssistant 1: 8\nAssistant 2: 4", (8.0, 4.0)),
        # scales, ranges, out of range, fractions over 5, negatives, refusals
        ("Rate each assistant from 1 to 10.", None),
        ("Assistant 1: 1-10\nAssistant 2: 1-10", None),
        ("Assistant 1: 7-8\nAssistant 2: 6", None),
        ("Assistant 1: 11\nAssistant 2: 6", None),
        ("Assistant 1: 8/10\nAssistant 2: 4/5", None),
        ("Assistant 1: -2\nAssistant 2: 7", None),
        ("[[12, 6]]", None),
        ("Assistant 1's answer is 10 times better than Assistant 2's.", None),
        ("I cannot compare these answers.", None),
        ("", None),
    ],
)
def test_parse_pair_reads_only_stated_scores(text, expected):
    found = parse_pair(text)
    assert (None if found is None else (found[0].value, found[1].value)) == expected
    if found:
        assert (float(text[found[0].start : found[0].end]), float(text[found[1].start : found[1].end])) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("8 and 6, roughly.", (8.0, 6.0)), ("Both: 7", None), ("7, 8, 9", None), ("1 to 10 and 1 to 10", None)],
)
def test_parse_pair_short_reply(text, expected):
    found = parse_pair(text, short_reply=True)
    assert (None if found is None else (found[0].value, found[1].value)) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Evaluation evidence: ...\nScore of the Assistant 1: 8\nScore of the Assistant 2: 6", (8.0, 6.0)),
        ("Score of the Assistant 1: **7**\nScore of the Assistant 2: [6/10]", (7.0, 6.0)),
        ("Score of the Assistant 1: 9.5\nScore of the Assistant 2: 2", (9.5, 2.0)),
        # the template echoed back, with its scale
        ("Score of the Assistant 1: 1-10\nScore of the Assistant 2: 1-10", None),
        ("Score of the Assistant 1: 1 to 10\nScore of the Assistant 2: 7", None),
        ("Score of the Assistant 1: X\nScore of the Assistant 2: Y", None),
        ("Score of the Assistant 1: 11\nScore of the Assistant 2: 7", None),
        ("Score of the Assistant 1: -1\nScore of the Assistant 2: 7", None),
        ("Score of the Assistant 1: 4/5\nScore of the Assistant 2: 3/5", None),
        ("Score of the Assistant 1: 8", None),  # one line only
        ("I refuse.", None),
    ],
)
def test_parse_table8(text, expected):
    found = parse_table8(text)
    assert (None if found is None else (found[0].value, found[1].value)) == expected


# ------------------------------------------------------------------ FastChat's reference parser


@pytest.mark.parametrize(
    "text, expected",
    [
        # reference-exact: the FIRST [[n]], else the first [n]; out of range kept as FastChat keeps it
        ("Rating: [[8]]", 8),
        ("[[5]] is the example; mine is [[3]]", 5),
        ("Rating: [[11]]", 11),
        ("Rating: [[8.5]]", 8.5),
        ("Rating: [7]", 7),
        # no brackets: FastChat's -1, whatever numbers the text holds
        ("I'll provide a rating of 1 to 10.", -1),
        ("Rating of 1 to 10: 7", -1),
        ("Rating: 8/10", -1),
        ("**Rating:** 8", -1),
        ("Rating: [[-3]]", -1),
        ("I cannot rate this.", -1),
    ],
)
def test_reference_rating_is_fastchats(text, expected):
    rating, problem = reference_rating(text)
    assert rating == expected
    assert (problem is None) == (expected != -1)


# ------------------------------------------------------------------ preference verdicts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", 1.0),
        ("A", 0.0),
        ("[[B]]", 1.0),
        ("Output (A) is better.", 0.0),
        ("Output (B)", 1.0),
        ("**B**", 1.0),
        ("Both are bad, but Output (B) is slightly better.", 1.0),
        ("It's a tie.", 0.5),
        ("A and B are equally good.", 0.5),
        ("A is not better than B.", None),  # a negation is no verdict for A
        ("I cannot decide.", None),
        ("Neither.", None),
        ("", None),
    ],
)
def test_preference_verdict_text(text, expected):
    assert parse_verdict_text(text) == expected


# ------------------------------------------------------------------ classifier labels


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Math", "Math"),
        ("math.", "Math"),
        ("Task type: Code Debug", "Code Debug"),
        ("The task type is Law.", "Law"),
        ("Mathh", "Math"),  # fuzzy
        ("Math, Reasoning, Writing, Law", None),  # an echoed list
        ("I cannot classify this instruction because it is unclear.", None),
        ("7", None),
        ("", None),
    ],
)
def test_label_parser(text, expected):
    assert LabelParser().parse(text)[0] == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The instruction asks to fix a bug.\nTask type: Code Debug", "Code Debug"),
        ("Reason: it computes a sum, but it is not Reasoning.\n#Task Classification#: Math", "Math"),
        ("It could be either.\nTask type: Math or Reasoning", None),  # two labels in the verdict
        ("Reason: a poem.\nTask type: Writing\nOn reflection:\nTask type: Literature", "Literature"),
        ("I cannot classify this.", None),
    ],
)
def test_reasoned_label(text, expected):
    assert parse_reasoned(LabelParser(), text)[0] == expected
