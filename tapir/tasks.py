"""The task types of TAPIR and the paper's re-sampling weights."""

from __future__ import annotations

TASK_TYPES: tuple[str, ...] = (
    "Math", "Code Generation", "Writing", "Computer Science", "Reasoning",
    "Complex Format", "Code Debug", "Common-Sense", "Counterfactual",
    "Multilingual", "Roleplay", "Biology", "Technology", "Ethics", "Sport",
    "Law", "Medicine", "Literature", "Entertainment", "Art", "Music",
    "Toxicity", "Economy", "Physics", "History", "Chemistry", "Philosophy",
    "Health", "Ecology", "Grammar", "Paraphrase", "Others",
)

# Families that get a task-specific rewriting prompt.
MATH_REASONING = frozenset({"Math", "Reasoning"})
CODING = frozenset({"Code Generation", "Code Debug"})


def paper_weights() -> dict[str, float]:
    """Math and Reasoning 1/6 each, Code Generation and Code Debug 1/12 each,
    the remaining task types share 1/2 evenly."""
    fixed = {"Math": 1 / 6, "Reasoning": 1 / 6, "Code Generation": 1 / 12, "Code Debug": 1 / 12}
    rest = [t for t in TASK_TYPES if t not in fixed]
    return {t: fixed.get(t, 0.5 / len(rest)) for t in TASK_TYPES}


def uniform_weights() -> dict[str, float]:
    return {t: 1 / len(TASK_TYPES) for t in TASK_TYPES}
