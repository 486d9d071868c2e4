"""Checks that tell a usable generation from a broken one: loops, a
"refined instruction" that is an answer, a refinement that drifts; and the
rewriter failing such rewrites with the reason (the original is kept)."""

from __future__ import annotations

import pytest

from tapir.roles import GenerationParams, Item
from tapir.textchecks import drifts_from, reads_as_answer, repeats_itself
from test_teachers import FakeBackend, rewriter, teacher

LOOP = ("The best way to learn is to practice. " * 12).strip()
FINE = ("Photosynthesis turns light, water and carbon dioxide into glucose and oxygen. Chlorophyll in the "
        "chloroplasts absorbs mostly red and blue light; the light reactions split water and make ATP and NADPH, "
        "and the Calvin cycle uses them to fix carbon dioxide into sugars that the plant stores as starch.")


@pytest.mark.parametrize("text, loops", [
    (LOOP, True),
    ("Step 1: add the numbers together now.\n" * 4, True),  # one line three times or more
    (FINE, False),
    ("short reply " * 3, False),  # too short to judge
    ("1. Preheat the oven to 180 C.\n2. Mix flour and sugar.\n3. Add the eggs one at a time.\n"
     "4. Bake for 25 minutes.\n5. Let the cake cool before slicing.", False),
])
def test_repeats_itself(text, loops):
    assert (repeats_itself(text) is not None) is loops


@pytest.mark.parametrize("refined, original, answer_like", [
    ("Hello. I'm a business writer with ten years of experience in marketing copy.", "Write a product slogan.",
     True),
    ("Sure, here is a refined version of the instruction.", "Explain gravity.", True),
    ("Certainly! The capital of France is Paris.", "What is the capital of France?", True),
    ("As an AI language model, I cannot browse the web.", "Summarise today's news.", True),
    ("Yes, that is correct.", "Is 7 prime?", True),
    ("Write a four-line slogan for an eco-friendly water bottle, aimed at hikers.", "Write a product slogan.",
     False),
    ("Explain, step by step, why objects fall at the same rate in a vacuum.", "Explain gravity.", False),
    ("Nobody knows the answer: explain why the Riemann hypothesis is hard.", "Why is the Riemann hypothesis hard?",
     False),  # 'No' only as a whole word
    ("I am planning a week in Japan in April: suggest a day-by-day itinerary.", "I am planning a trip to Japan.",
     False),  # the original speaks in the first person too
])
def test_reads_as_answer(refined, original, answer_like):
    assert (reads_as_answer(refined, original) is not None) is answer_like


def test_drifts_from():
    original = "Explain how vaccines train the immune system to recognise viruses."
    assert drifts_from("Explain, for a ten-year-old, how vaccines train the immune system to recognise viruses.",
                       original, min_overlap=0.2) is None
    reason = drifts_from("Write a limerick about a cat who loves lasagna.", original, min_overlap=0.2)
    assert reason == ("the refinement drifts from the original: it keeps 0 of its 6 content words (0%, below 20%)")
    assert drifts_from("Write a limerick.", "Add 2 and 2.", min_overlap=0.2) is None  # too few words to judge
    assert drifts_from("anything", original, min_overlap=0.0) is None  # check off


def test_rewriter_fails_answer_like_looping_and_drifting_refinements():
    refinements = {
        "Write a product slogan for a reusable water bottle.":
            "Hello. I'm a business writer with ten years of experience in marketing.",
        "Describe the water cycle in nature.": "Describe " + "the water cycle again and again, " * 10,
        "Explain how vaccines train the immune system.": "Write a limerick about a cat who loves lasagna.",
        "List three uses of copper in electronics.": "List three uses of copper in modern electronics, with a reason "
                                                    "for each.",
        "Summarise the causes of the French revolution.": "Summarise the main causes of the French revolution.",
    }
    answers = {"copper": "Copper wires conduct well; copper traces on boards; copper heat sinks.", "revolution": LOOP}

    def refine(messages):
        return _refined(messages, refinements)

    def answer(messages):
        text = messages[-1]["content"]
        return next(v for k, v in answers.items() if k in text)

    items = [Item(str(i), text, task_type="Writing") for i, text in enumerate(refinements)]
    results = rewriter(FakeBackend(refine, 100)).rewrite(items, teacher(FakeBackend(answer, 200)),
                                                         GenerationParams(max_new_tokens=64))
    errors = [r.error for r in results]
    assert errors[0] == ("instruction refinement rejected: the refinement reads as an answer, not an instruction "
                         "(it opens with 'Hello')")
    assert errors[1].startswith("instruction refinement rejected: the text loops: ")
    assert errors[2].startswith("instruction refinement rejected: the refinement drifts from the original: "
                                "it keeps 0 of its ")
    assert errors[3] is None and results[3].answer.startswith("Copper wires")
    assert errors[4].startswith("teacher answer to the refined instruction repeats itself: the text loops")
    assert [r.answer for r in results if r.error] == [""] * 4  # failed rewrites never replace the original


def _refined(messages, refinements):
    prompt = messages[-1]["content"]
    for original, refined in refinements.items():
        if original in prompt:
            return refined
    raise AssertionError(f"unexpected prompt: {prompt[-200:]}")


def test_checks_can_be_switched_off():
    item = Item("a", "Write a product slogan for a water bottle.", task_type="Writing")
    results = rewriter(FakeBackend(lambda m: "Hello. I'm a business writer.", 100), reject_answers=False,
                       min_overlap=0).rewrite([item], teacher(FakeBackend(lambda m: "Stay hydrated, go far.")),
                                              GenerationParams(max_new_tokens=64))
    assert results[0].error is None
