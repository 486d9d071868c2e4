"""A chat completion reply, as the direct path's dict or litellm's response
object, read into a :class:`~tapir.roles.Completion`."""

from __future__ import annotations

from typing import Any

from tapir.roles import Completion, TokenLogprob
from tapir_litellm.retry import MalformedResponse


def completion_of(response: Any, cost: float | None) -> Completion:
    """The first choice's text, its logprobs, the usage and provenance; a
    reply without a choice or without text is :class:`MalformedResponse`."""
    choices = field(response, "choices")
    if not choices:
        raise MalformedResponse("response has no choices")
    choice = choices[0]
    text = field(field(choice, "message"), "content")
    if not isinstance(text, str):
        raise MalformedResponse("response message has no text content")
    usage = field(response, "usage")
    return Completion(
        text=text,
        logprobs=logprobs_of(field(choice, "logprobs")),
        prompt_tokens=field(usage, "prompt_tokens"),
        completion_tokens=field(usage, "completion_tokens"),
        cost=cost,
        finish_reason=field(choice, "finish_reason"),
        provider_model=_text_or_none(field(response, "model")),
        system_fingerprint=_text_or_none(field(response, "system_fingerprint")),
    )


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` of a JSON dict (the direct path), the attribute of
    litellm's pydantic response objects; ``default`` when absent."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _text_or_none(value: Any) -> str | None:
    """A provenance field as the provider sent it (a non-empty string), else None."""
    return value if isinstance(value, str) and value else None


def logprobs_of(raw: Any) -> list[TokenLogprob] | None:
    """OpenAI-format ``choice.logprobs`` -> our TokenLogprob list (None if absent)."""
    content = field(raw, "content") if raw is not None else None
    if not content:
        return None
    out = []
    for entry in content:
        top = [(field(t, "token"), float(field(t, "logprob"))) for t in (field(entry, "top_logprobs") or [])]
        out.append(TokenLogprob(field(entry, "token"), float(field(entry, "logprob")), top))
    return out
