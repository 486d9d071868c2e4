"""Judge prompts: the paper's pairwise prompt (Table 8), tapir's own pairwise
prompt, the preference prompt, and the nudges sent when a reply could not be
parsed.

(MT-Bench's single-answer prompts are not here: they are read at run time
from the installed data file, see :mod:`tapir_judges.mtbench_prompts`.)
"""

from __future__ import annotations

from tapir.roles import Message

# -- pairwise, the paper's prompt (Table 8) -----------------------------------
#
# TAPIR paper, Appendix B, Table 8 ("Prompt template of ChatGPT for judging the
# 'goodness' of responses"): its system prompt, the instruction and both
# answers between start/end markers, then a [System] request, reworded here
# clause by clause, with its output format kept word for word:
#
#     Evaluation evidence: <your evaluation explanation here>
#     Score of the Assistant 1: <score>
#     Score of the Assistant 2: <score>
#
# The table's typos (the start marker of Assistant 2 printed twice,
# "[Answer_2}") are not reproduced. tapir_judges.pairwise parses this format
# first and falls back to the lenient parser (tapir.judging.parse_pair).

TABLE8_SYSTEM = "You are a helpful and precise assistant whose job is to check how good an answer is."

TABLE8_TEMPLATE = """[Instruction]
{question}

[The Start of Assistant 1's Answer]
{answer_1}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}
[The End of Assistant 2's Answer]

[System]
Please give us your feedback on how well the two AI assistants responded to the user instruction and input shown \
above. Rate the helpfulness, relevance, accuracy and level of detail of their responses. Each assistant gets one \
overall score on a scale from 1 to 10, where a higher score means better overall performance. {format}"""

TABLE8_FORMAT_EXPLAINED = """First give a thorough explanation of your evaluation, avoiding any possible bias and \
making sure that the order in which the responses were shown does not influence your judgment. Then write two lines \
with the scores of Assistant 1 and Assistant 2, in that order. Use exactly this output format:
Evaluation evidence: <your evaluation explanation here>
Score of the Assistant 1: <score>
Score of the Assistant 2: <score>"""

# option score_only (a tapir extension, not in the paper): no explanation.
TABLE8_FORMAT_SCORES_ONLY = """Avoid any possible bias and make sure that the order in which the responses were shown \
does not influence your judgment. Reply with the two score lines only, in exactly this output format:
Score of the Assistant 1: <score>
Score of the Assistant 2: <score>"""

TABLE8_NUDGE = """I could not read the two scores in your reply. Reply again and end with exactly these two lines, \
where each <score> is a number from 1 to 10:
Score of the Assistant 1: <score>
Score of the Assistant 2: <score>"""


def table8_messages(question: str, answer_1: str, answer_2: str, *, scores_only: bool = False) -> list[Message]:
    """The paper's pairwise prompt (Table 8) for one presentation order."""
    fmt = TABLE8_FORMAT_SCORES_ONLY if scores_only else TABLE8_FORMAT_EXPLAINED
    user = TABLE8_TEMPLATE.format(question=question, answer_1=answer_1, answer_2=answer_2, format=fmt)
    return [{"role": "system", "content": TABLE8_SYSTEM}, {"role": "user", "content": user}]


# -- pairwise, tapir's own wording (option prompt: tapir) ----------------------

PAIRWISE_SYSTEM = (
    "You are a helpful and precise judge of the answers that AI assistants give. "
    "You grade fairly and consistently."
)

PAIRWISE_TEMPLATE = """Two AI assistants answered the same question. Grade both answers.

### Question
{question}

### Answer of Assistant 1
{answer_1}

### Answer of Assistant 2
{answer_2}

### How to grade
Give each answer a score from 1 to 10 (10 is best) for how helpful, relevant, accurate and detailed it is. \
Grade the content only: the order in which the answers are shown, their length and the assistants' numbers \
must not change your scores.
{format}"""

PAIRWISE_FORMAT_EXPLAINED = """First explain your grading in a few sentences. Then end your reply with exactly these two lines, \
with the scores as numbers:
Assistant 1: <score>
Assistant 2: <score>"""

PAIRWISE_FORMAT_SCORES_ONLY = """Reply with the two scores only, in exactly this form:
Assistant 1: <score>
Assistant 2: <score>"""

PAIRWISE_NUDGE = """I could not read the two scores in your reply. Reply again, and end with exactly these two lines, \
where each <score> is a number from 1 to 10:
Assistant 1: <score>
Assistant 2: <score>"""


def pairwise_messages(question: str, answer_1: str, answer_2: str, *, scores_only: bool = False) -> list[Message]:
    """tapir's own pairwise prompt for one presentation order."""
    fmt = PAIRWISE_FORMAT_SCORES_ONLY if scores_only else PAIRWISE_FORMAT_EXPLAINED
    user = PAIRWISE_TEMPLATE.format(question=question, answer_1=answer_1, answer_2=answer_2, format=fmt)
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


# name -> (messages builder, nudge), for the pairwise judge's ``prompt`` option
PAIRWISE_PROMPTS = {
    "table8": (table8_messages, TABLE8_NUDGE),
    "tapir": (pairwise_messages, PAIRWISE_NUDGE),
}


# -- single grading (MT-Bench) extras -----------------------------------------

SINGLE_SCORE_ONLY = "\n\nReply with the rating only, in the form [[rating]], for example [[5]]."

SINGLE_NUDGE = (
    "I could not find your rating. Reply again and give the rating as a number from 1 to 10 "
    "in double square brackets, for example: Rating: [[5]]"
)

# -- preference (AlpacaEval 2.0 style) ----------------------------------------

PREFERENCE_SYSTEM = (
    "You compare the outputs of AI assistants and pick the one a careful human reader would prefer. "
    "You answer with a single letter."
)

PREFERENCE_TEMPLATE = """Here is an instruction and two outputs written for it, labelled A and B.

### Instruction
{instruction}

### Output A
{output_a}

### Output B
{output_b}

Which output follows the instruction better? Weigh correctness, helpfulness, completeness and clarity; \
do not let the order of the outputs or their length sway you. Reply with one letter, A or B, and nothing else."""

PREFERENCE_NUDGE = "Reply with exactly one letter: A if Output A is better, B if Output B is better."

VERDICT_TOKENS = ("A", "B")


def preference_messages(instruction: str, output_a: str, output_b: str) -> list[Message]:
    """The preference prompt; the verdict is the single token A or B."""
    user = PREFERENCE_TEMPLATE.format(instruction=instruction, output_a=output_a, output_b=output_b)
    return [{"role": "system", "content": PREFERENCE_SYSTEM}, {"role": "user", "content": user}]
