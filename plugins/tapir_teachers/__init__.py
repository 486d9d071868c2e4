"""Teacher, expansion and task-aware rewriting prompts over any backend."""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_teachers(register):
    register(
        "default",
        "tapir_teachers.teacher:PromptTeacher",
        description="answers instructions and writes new ones of a task type (expansion)",
    )


@hookimpl
def register_rewriters(register):
    register(
        "task-aware",
        "tapir_teachers.rewriter:TaskAwareRewriter",
        description="step by step for math/reasoning, explained code for coding, better answers elsewhere",
    )
