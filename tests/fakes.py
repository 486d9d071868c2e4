"""Test doubles (used only inside tests)."""

from __future__ import annotations

from typing import Callable, Sequence

from tapir.roles import Completion, GenerationRequest, TokenLogprob


class ScriptedBackend:
    """A backend whose answer is computed by ``reply(messages) -> str`` (or a
    Completion). Counts every request it receives."""

    def __init__(self, reply: Callable[[list[dict]], str | Completion], model_id: str = "scripted"):
        self.reply = reply
        self.model_id = model_id
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest], on_result=None):
        out = []
        for i, request in enumerate(requests):
            self.requests.append(request)
            answer = self.reply(request.messages)
            completion = answer if isinstance(answer, Completion) else Completion(text=answer)
            out.append(completion)
            if on_result:
                on_result(i, completion)
        return out


def digit_logprobs(dist: dict[str, float], text: str | None = None) -> list[TokenLogprob]:
    """A one-token completion whose top alternatives are ``dist`` (token -> prob)."""
    import math

    top = [(tok, math.log(p)) for tok, p in sorted(dist.items(), key=lambda kv: -kv[1])]
    first = top[0]
    return [TokenLogprob(text or first[0], first[1], top)]
