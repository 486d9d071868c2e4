"""The task-aware rewriter's capabilities (tapir.roles.CAPABILITIES), named
in its register(...) call with
``capabilities="tapir_teachers.capabilities:TaskAware"`` so that
registering it imports this module, not the rewriter's. Each answers
through the rewriter class, imported only when asked."""

from __future__ import annotations

from typing import Any


class TaskAware:
    @staticmethod
    def estimate(stage: str, n: int, prompt_tokens: int, options: Any) -> list:
        from tapir_teachers.rewriter import TaskAwareRewriter

        return TaskAwareRewriter.estimate(stage, n, prompt_tokens, options)

    @staticmethod
    def answered_by(options: Any) -> str:
        from tapir_teachers.rewriter import TaskAwareRewriter

        return TaskAwareRewriter.answered_by(options)
