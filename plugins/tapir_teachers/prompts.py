"""Prompt texts of the teacher (expansion) and the task-aware rewriter.

Expansion
    ``EXPANSION_PROMPTS["table7"]`` (the default) is the instruction-creator
    prompt of the TAPIR paper, Table 7 (Appendix B, "Prompt template of
    ChatGPT for dataset expansion"), written in our own words. Every clause of
    the table is kept: act as an instruction creator inspired by the given
    instruction; the new instruction has the same task type; similar LENGTH
    and difficulty; different content; reasonable, and understandable and
    answerable by humans; the four banned phrases ('#Given Instruction#',
    '#Created Instruction#', 'given instruction', 'created instruction'); and
    the output format, the ``#Given Instruction#:`` / ``#Created
    Instruction#:`` markers the reply continues from. Its system prompt is the
    table's. (The table's sentence fragment "The #Created Instruction#." is a
    typo in the paper and carries no instruction.)

    ``EXPANSION_PROMPTS["tapir-examples"]`` is tapir's earlier prompt, kept as
    a named alternative: several example instructions of the task type at once.

Rewriting (paper section 3, "task-aware rewriting", and Appendix C)
    ``REFINE_SYSTEM`` asks a rewriter model to refine an instruction, shown a
    few refinement examples of our own (``refine_examples.jsonl``, written in
    the style of Table 11: the same request made specific, the form of the
    answer stated, step by step asked for in math and reasoning).
    ``ANSWER_TEMPLATES`` are the task-aware templates the teacher answers the
    refined instruction with: step by step for Math and Reasoning, explained
    code for Code Generation and Code Debug, a better answer elsewhere.
    ``POLISH_SYSTEM`` / ``POLISH_USER`` are tapir's earlier answer-polishing
    prompts (mode ``polish-answer``).
"""

from __future__ import annotations

from tapir.tasks import CODING, MATH_REASONING

# --- expansion ------------------------------------------------------------------

# Table 7's system prompt.
TABLE7_SYSTEM = "You are a helpful assistant."

# Table 7 in our own words; {task_type} and {instruction} are filled in.
TABLE7_USER = (
    "Act as an Instruction Creator. Your goal is to take the #Given Instruction# as inspiration and "
    "write a brand-new instruction. The new instruction must be of the same task type as the "
    "#Given Instruction#: {task_type}. Keep the LENGTH and the difficulty level of the "
    "#Created Instruction# close to those of the #Given Instruction#, but make the content of the "
    "#Created Instruction# different from the content of the #Given Instruction#. The "
    "#Created Instruction# has to be reasonable, and a person must be able to understand it and "
    "respond to it. The phrases '#Given Instruction#', '#Created Instruction#', 'given instruction' "
    "and 'created instruction' must not appear anywhere in the #Created Instruction#.\n"
    "#Given Instruction#:\n"
    "{instruction}\n"
    "#Created Instruction#:"
)

# Phrases Table 7 forbids in a created instruction (compared case-insensitively).
TABLE7_BANNED = ("#Given Instruction#", "#Created Instruction#", "given instruction", "created instruction")

# tapir's earlier expansion prompt: several examples of the task type at once.
TAPIR_EXAMPLES_USER = """You write new tasks for an AI assistant.
Task type: {task_type}.
Here are example instructions of this type and difficulty:
{examples}
Write ONE new instruction of the same task type and similar difficulty. It must be different from the examples, self-contained and answerable in a few paragraphs.
Reply with the new instruction only, no answer and no numbering."""

EXPANSION_PROMPTS = ("table7", "tapir-examples")


def expansion_messages(prompt: str, task_type: str, examples: list[str]) -> list[dict[str, str]]:
    """The messages asking for one new instruction of ``task_type``.

    ``table7`` shows one given instruction (``examples[0]``, the seed drawn;
    the others are not used); ``tapir-examples`` lists them all."""
    if not examples:
        raise ValueError("an expansion request needs at least one example instruction")
    if prompt == "table7":
        user = TABLE7_USER.format(task_type=task_type, instruction=examples[0])
        return [{"role": "system", "content": TABLE7_SYSTEM}, {"role": "user", "content": user}]
    if prompt == "tapir-examples":
        listing = "\n".join(f"{i}. {text}" for i, text in enumerate(examples, 1))
        return [{"role": "user", "content": TAPIR_EXAMPLES_USER.format(task_type=task_type, examples=listing)}]
    raise ValueError(f"unknown expansion prompt {prompt!r}; choose one of {', '.join(EXPANSION_PROMPTS)}")


# --- task families ------------------------------------------------------------------


def family(task_type: str | None) -> str:
    """'math' (Math, Reasoning), 'code' (Code Generation, Code Debug) or 'general'."""
    if task_type in MATH_REASONING:
        return "math"
    if task_type in CODING:
        return "code"
    return "general"


# --- instruction refinement (Appendix C) ------------------------------------------------

REFINE_SYSTEM = (
    "You refine instructions written for an AI assistant, so that the assistant's answer comes out "
    "more detailed and better structured. Keep the task itself and every fact, number, name, piece "
    "of code and constraint of the original instruction. Make it clearer and more specific: say what "
    "the answer should cover and in which form. For math and reasoning problems, ask for step-by-step "
    "reasoning and say in which form to give the final answer; for programming tasks, ask for code "
    "with an explanation. Do not answer the instruction. Reply with the refined instruction only."
)


def refine_messages(instruction: str, examples: list[dict[str, str]]) -> list[dict[str, str]]:
    """The refinement request for ``instruction``: the system prompt, each
    example as a user turn (original) and an assistant turn (refined), then
    the instruction. With no examples this is the prompt ``tapir rewriter
    train`` trains a rewriter model on."""
    messages = [{"role": "system", "content": REFINE_SYSTEM}]
    for ex in examples:
        messages.append({"role": "user", "content": ex["instruction"]})
        messages.append({"role": "assistant", "content": ex["refined"]})
    messages.append({"role": "user", "content": instruction})
    return messages


# Task-aware templates: the teacher answers the refined instruction through these.
ANSWER_TEMPLATES = {
    "math": (
        "{instruction}\n\n"
        "Solve this step by step: show each step of the reasoning, check the result, and finish with a "
        "line 'Final answer: ...'."
    ),
    "code": (
        "{instruction}\n\n"
        "Give correct, runnable code in a fenced code block, then explain how it works. If the task is to "
        "fix code, first say what the bug is and why it happens."
    ),
    "general": (
        "{instruction}\n\n"
        "Give a helpful, accurate and detailed answer that covers everything the instruction asks for, "
        "well organised and no longer than it needs to be."
    ),
}


# --- answer polishing (mode polish-answer: tapir's earlier rewriting) ----------------------

POLISH_SYSTEM = {
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

POLISH_USER = """Instruction:
{instruction}

Draft answer:
{draft}

Write the improved answer only."""
