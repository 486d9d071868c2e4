"""Teacher, expansion and task-aware rewriting prompts over any backend.

``tapir rewriter train`` (train an instruction-refinement model) lives in
:mod:`tapir_teachers.cli`.
"""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_teachers(register):
    register(
        "default",
        "tapir_teachers.teacher:Teacher",
        description="answers instructions and writes new ones of a task type (expansion, Table 7 prompt)",
    )


@hookimpl
def register_rewriters(register):
    register(
        "task-aware",
        "tapir_teachers.rewriter:TaskAwareRewriter",
        description="refines the instruction, the teacher answers it task-aware (step by step for math/reasoning, "
        "explained code for coding); or polishes the teacher's answer",
        capabilities="tapir_teachers.capabilities:TaskAware",
    )


@hookimpl
def register_commands(cli):
    from tapir_teachers.cli import register

    register(cli)
