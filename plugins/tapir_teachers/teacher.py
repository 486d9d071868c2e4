"""The default teacher: answers instructions and writes new ones (expansion)."""

from __future__ import annotations

import re
from typing import Literal, Sequence

from tapir import options as opt
from tapir.errors import TapirError
from tapir.roles import Completion, GenerationParams, GenerationRequest, Item

from tapir_teachers.prompts import TABLE7_BANNED, expansion_messages

_PREFIX = re.compile(
    r"^\s*(?:#\s*created\s+instruction\s*#|(?:new|created)?\s*(?:instruction|task|question))\s*[:\-]\s*", re.I)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_ANSWER_LINE = re.compile(r"^\s*(answer|response|output|solution)\s*:", re.I)
_GIVEN_MARKER = re.compile(r"#\s*given\s+instruction\s*#", re.I)
_CREATED_MARKER = re.compile(r"#\s*created\s+instruction\s*#\s*:?", re.I)


class Teacher:
    """A prompt over a backend. ``answer`` replies to items;
    ``create_instructions`` writes one new instruction per (task type,
    examples) group, with the paper's Table 7 prompt by default."""

    class Options(opt.Options):
        system_prompt: str | None = opt.option(None, "system prompt for answers (none: the user turn only)")
        expansion_prompt: Literal["table7", "tapir-examples"] = opt.option(
            "table7", "expansion prompt: 'table7' (the paper's Table 7, one given instruction) or "
            "'tapir-examples' (tapir's earlier prompt listing several examples)")
        min_words: int = opt.option(3, "a created instruction with fewer words is malformed", ge=1)
        max_chars: int = opt.option(1000, "a created instruction with more characters is malformed", ge=1)

    def __init__(self, backend, options: "Teacher.Options"):
        if backend is None:
            raise TapirError("the teacher needs a model: set teacher.model in the config")
        self.backend = backend
        self.options = options

    def messages(self, item: Item) -> list[dict]:
        """The item's own turns (a dataset's system prompt comes with it), or the
        configured system prompt before the instruction."""
        if item.meta.get("system"):
            return item.messages
        system = self.options.system_prompt
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + item.messages

    def answer(self, items: Sequence[Item], params: GenerationParams, on_result=None, *,
               samples: Sequence[int] | None = None) -> list[Completion]:
        samples = list(samples) if samples is not None else [0] * len(items)
        requests = [GenerationRequest(self.messages(it), params, sample, meta={"item_id": it.id})
                    for it, sample in zip(items, samples)]
        return self.backend.generate(requests, on_result=on_result)

    def expansion_messages(self, task_type: str, examples: Sequence[Item]) -> list[dict]:
        return expansion_messages(self.options.expansion_prompt, task_type, [ex.prompt for ex in examples])

    def create_instructions(self, groups: Sequence[tuple[str, Sequence[Item]]], samples: Sequence[int],
                            params: GenerationParams, on_result=None) -> list[Completion]:
        """One new instruction per (task type, example items) group; ``samples``
        gives each group's sample index, so asking again yields new text (with
        ``params.temperature`` > 0). Table 7 shows the first example only."""
        if len(groups) != len(samples):
            raise ValueError(f"{len(groups)} groups but {len(samples)} sample indexes")
        # The call log's item is the seed instruction the new one is written from.
        requests = [
            GenerationRequest(self.expansion_messages(task_type, examples), params, sample,
                              meta={"item_id": examples[0].id} if examples else {})
            for (task_type, examples), sample in zip(groups, samples)
        ]
        return self.backend.generate(requests, on_result=on_result)

    def clean_instruction(self, text: str) -> str | None:
        """The instruction in a creator reply, or None when it is malformed."""
        return clean_instruction(text, self.options.min_words, self.options.max_chars)


def clean_instruction(text: str, min_words: int = 3, max_chars: int = 1000) -> str | None:
    """The instruction in a creator reply, or None when it is malformed:
    empty, too short or long, or containing a phrase Table 7 bans.

    A leading label ("#Created Instruction#:", "Instruction:", numbering) is
    dropped; the reply stops at an answer line ("Answer: ...") or at a new
    "#Given Instruction#" block. A reply that first repeats the given
    instruction ("#Given Instruction#: ... #Created Instruction#: X") yields X."""
    text = text or ""
    given, created = _GIVEN_MARKER.search(text), _CREATED_MARKER.search(text)
    if given and created and not text[: given.start()].strip() and given.start() < created.start():
        text = text[created.end():]
    text = _GIVEN_MARKER.split(text, maxsplit=1)[0]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    first = _NUMBERING.sub("", _PREFIX.sub("", lines[0])).strip().strip('"').strip()
    # Keep following lines that belong to the instruction (an input block),
    # stop at anything that looks like an answer.
    body = [first] if first else []
    for line in lines[1:]:
        if _ANSWER_LINE.match(line):
            break
        body.append(line.rstrip())
    result = "\n".join(body).strip()
    if len(result.split()) < min_words or len(result) > max_chars:
        return None
    lowered = result.lower()
    if any(phrase.lower() in lowered for phrase in TABLE7_BANNED):
        return None
    return result
