"""The default teacher: answers instructions and writes new ones (expansion)."""

from __future__ import annotations

import re
from typing import Sequence

from tapir.roles import Completion, GenerationParams, GenerationRequest, Item

from tapir_teachers.prompts import CREATE_INSTRUCTION

_PREFIX = re.compile(r"^\s*(?:new\s+)?(?:instruction|task|question)\s*[:\-]\s*", re.I)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")


def _params(max_new_tokens: int, temperature: float, top_p: float = 1.0) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)


class PromptTeacher:
    """A prompt over a backend. ``answer`` replies to items; ``create_instructions``
    writes new instructions like a set of seed examples (the TAPIR creator)."""

    def __init__(self, backend, system_prompt: str | None = None, max_new_tokens: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, create_temperature: float = 0.7,
                 create_max_new_tokens: int = 96, **_ignored):
        if backend is None:
            from tapir.errors import TapirError

            raise TapirError("the teacher needs a model: set teacher.model in the config")
        self.backend = backend
        self.system_prompt = system_prompt
        self.params = _params(max_new_tokens, temperature, top_p)
        self.create_params = _params(create_max_new_tokens, create_temperature, 0.95)

    def messages(self, item: Item) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return msgs + [{"role": "user", "content": item.prompt}]

    def answer(self, items: Sequence[Item], on_result=None) -> list[Completion]:
        requests = [GenerationRequest(self.messages(it), self.params) for it in items]
        return self.backend.generate(requests, on_result=on_result)

    def create_instructions(self, groups: Sequence[tuple[str, Sequence[Item]]], samples: Sequence[int],
                            on_result=None) -> list[Completion]:
        """One new instruction per (task type, example items) group; ``samples``
        gives each group's sample index, so asking again yields new text."""
        requests = []
        for (task_type, examples), sample in zip(groups, samples):
            listing = "\n".join(f"{i}. {ex.prompt}" for i, ex in enumerate(examples, 1))
            prompt = CREATE_INSTRUCTION.format(task_type=task_type, examples=listing)
            requests.append(GenerationRequest([{"role": "user", "content": prompt}], self.create_params, sample))
        return self.backend.generate(requests, on_result=on_result)


def clean_instruction(text: str, min_words: int = 3, max_chars: int = 1000) -> str | None:
    """The instruction in a creator reply, or None when it is malformed."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    first = _NUMBERING.sub("", _PREFIX.sub("", lines[0])).strip().strip('"').strip()
    # Keep following lines that belong to the instruction (an input block),
    # stop at anything that looks like an answer.
    body = [first]
    for line in lines[1:]:
        if re.match(r"^\s*(answer|response|output|solution)\s*:", line, re.I):
            break
        body.append(line.rstrip())
    result = "\n".join(body).strip()
    if len(result.split()) < min_words or len(result) > max_chars:
        return None
    return result
