"""Judges: pairwise (TAPIR), single-answer grading (MT-Bench), preference
with logprobs (AlpacaEval 2.0), reference similarity and student loss.

Each class declares its options as a nested ``Options`` model
(:mod:`tapir.options`) and is built as ``Class(backend, options)``
(``backend`` may be ``None`` for judges that need no LLM) by the registry's
``Component.create``; it has ``name``, ``kind``, ``needs_model``,
``needs_student``, ``reads_student_answer`` and ``judge(requests)``
(:class:`tapir.roles.Judge`).
"""

from __future__ import annotations

from tapir import hookimpl


# Each judge declares its flags (tapir.roles.FLAGS, the same values its class
# carries: tests/test_capabilities.py compares them) and where its
# capabilities are, so registering imports no judge module.


@hookimpl
def register_judges(register):
    register(
        "pairwise",
        "tapir_judges.pairwise:PairwiseJudge",
        description="TAPIR pairwise 1-10 judge (helpfulness, relevance, accuracy, detail), both orders averaged",
        flags={"needs_model": True, "needs_student": False, "reads_student_answer": True},
        capabilities="tapir_judges.capabilities:Pairwise",
    )
    register(
        "mtbench-single",
        "tapir_judges.single:MTBenchSingleJudge",
        description="MT-Bench single-answer grading 1-10 with its judge prompts ([[rating]]; reference, multi-turn)",
        flags={"needs_model": True, "needs_student": False, "reads_student_answer": True},
        capabilities="tapir_judges.capabilities:Single",
    )
    register(
        "preference",
        "tapir_judges.preference:PreferenceJudge",
        description="AlpacaEval 2.0-style preference: P(model output better), weighted by verdict-token logprobs",
        flags={"needs_model": True, "needs_student": False, "reads_student_answer": True},
        capabilities="tapir_judges.capabilities:Preference",
    )
    register(
        "reference-similarity",
        "tapir_judges.reference:ReferenceSimilarityJudge",
        description="no LLM: student answer scored by MiniLM-embedding (or ROUGE-L) similarity to the teacher's",
        flags={"needs_model": False, "needs_student": False, "reads_student_answer": True},
        capabilities=(),
    )
    register(
        "student-loss",
        "tapir_judges.student_loss:StudentLossJudge",
        description="no judge model: the student's per-token loss on the teacher's answer (needs a local student)",
        flags={"needs_model": False, "needs_student": True, "reads_student_answer": False},
        capabilities=(),
    )
