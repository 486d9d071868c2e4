"""Our prompt texts for answering, expansion and task-aware rewriting."""

from __future__ import annotations

from tapir.tasks import CODING, MATH_REASONING

CREATE_INSTRUCTION = """You write new tasks for an AI assistant.
Task type: {task_type}.
Here are example instructions of this type and difficulty:
{examples}
Write ONE new instruction of the same task type and similar difficulty. It must be different from the examples, self-contained and answerable in a few paragraphs.
Reply with the new instruction only, no answer and no numbering."""

REWRITE_SYSTEM = {
    "math": (
        "You improve answers to math and reasoning tasks. Solve the task step by step, showing each step "
        "of the reasoning, check the result, and finish with a line 'Final answer: ...'."
    ),
    "code": (
        "You improve answers to programming tasks. Give correct, runnable code in a fenced code block, "
        "then explain how it works; when fixing a bug, first say what the bug was."
    ),
    "general": (
        "You improve answers written by an AI assistant. Make the answer more helpful, accurate, relevant "
        "and detailed, well organised, and no longer than it needs to be."
    ),
}

REWRITE_USER = """Instruction:
{instruction}

Draft answer:
{draft}

Write the improved answer only."""

REFINE_INSTRUCTION = """Rewrite this instruction so that it is clearer and more specific while asking for the same thing. Reply with the rewritten instruction only.

Instruction:
{instruction}"""


def family(task_type: str | None) -> str:
    if task_type in MATH_REASONING:
        return "math"
    if task_type in CODING:
        return "code"
    return "general"
