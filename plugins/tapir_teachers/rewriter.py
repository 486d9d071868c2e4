"""Task-aware rewriting: a task-specific prompt per family of tasks."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from tapir.roles import GenerationParams, GenerationRequest, Item

from tapir_teachers.prompts import REFINE_INSTRUCTION, REWRITE_SYSTEM, REWRITE_USER, family


class TaskAwareRewriter:
    """Refines each item's answer (and optionally its instruction) with a prompt
    chosen by task type: step by step for math and reasoning, explained code
    for coding, a better general answer otherwise."""

    def __init__(self, backend, max_new_tokens: int = 512, temperature: float = 0.0,
                 refine_instruction: bool = False, min_chars: int = 8, **_ignored):
        if backend is None:
            from tapir.errors import TapirError

            raise TapirError("the rewriter needs a model: set rewriter.model in the config")
        self.backend = backend
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature)
        self.refine_instruction = refine_instruction
        self.min_chars = min_chars

    def _refine(self, items: Sequence[Item]) -> list[str]:
        if not self.refine_instruction:
            return [it.instruction for it in items]
        requests = [
            GenerationRequest([{"role": "user", "content": REFINE_INSTRUCTION.format(instruction=it.instruction)}],
                              self.params)
            for it in items
        ]
        out = []
        for it, c in zip(items, self.backend.generate(requests)):
            text = c.text.strip() if c.ok else ""
            out.append(text if len(text) >= self.min_chars else it.instruction)
        return out

    def rewrite(self, items: Sequence[Item]) -> list[Item | None]:
        instructions = self._refine(items)
        requests = []
        for it, instruction in zip(items, instructions):
            prompt = f"{instruction}\n\n{it.input}" if it.input else instruction
            user = REWRITE_USER.format(instruction=prompt, draft=it.output or "(no draft)")
            messages = [
                {"role": "system", "content": REWRITE_SYSTEM[family(it.task_type)]},
                {"role": "user", "content": user},
            ]
            requests.append(GenerationRequest(messages, self.params))
        results: list[Item | None] = []
        for it, instruction, c in zip(items, instructions, self.backend.generate(requests)):
            text = c.text.strip() if c.ok else ""
            if len(text) < self.min_chars:
                results.append(None)
                continue
            results.append(
                replace(it, id=f"{it.id}-rw", instruction=instruction, output=text,
                        meta={**it.meta, "rewritten_from": it.id, "family": family(it.task_type)})
            )
        return results
