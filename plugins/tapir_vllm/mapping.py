"""Pure translations between tapir's records and vLLM's (no vllm import),
so they are unit-tested on machines without vLLM or a GPU."""

from __future__ import annotations

from typing import Any

from tapir.roles import Completion, GenerationParams, TokenLogprob


def to_sampling_kwargs(params: GenerationParams, sample: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` that mean what ``params``
    means to every tapir backend: greedy at temperature 0 (top_p and seed
    ignored, as in the cache key), else temperature/top-p sampling seeded from
    (seed, sample) so distinct samples differ and each is reproducible; stop
    strings cut before the stop; ``top_logprobs`` alternatives per token."""
    sampled = params.temperature > 0
    return {
        "n": 1,
        "max_tokens": int(params.max_new_tokens),
        "temperature": float(params.temperature) if sampled else 0.0,
        "top_p": float(params.top_p) if sampled else 1.0,
        "seed": params.sample_seed(sample) if sampled else None,
        "stop": list(params.stop),
        "include_stop_str_in_output": False,
        "logprobs": int(params.top_logprobs) if params.top_logprobs > 0 else None,
    }


def _decoded(entry: Any, token_id: int, decode) -> str:
    text = getattr(entry, "decoded_token", None)
    return text if text is not None else decode(token_id)


def to_completion(output: Any, top_logprobs: int, latency_s: float | None = None, decode=None) -> Completion:
    """A :class:`Completion` from a ``vllm.RequestOutput`` (first sample).

    vLLM gives, per generated token, a dict ``{token_id: Logprob(logprob,
    rank, decoded_token)}`` holding the top-k and the sampled token; the top
    list is ordered by rank and cut to ``top_logprobs``."""
    decode = decode or (lambda token_id: str(token_id))
    first = output.outputs[0]
    token_ids = list(first.token_ids)
    logprobs = None
    if top_logprobs > 0 and first.logprobs is not None:
        logprobs = []
        for token_id, entries in zip(token_ids, first.logprobs):
            entries = dict(entries.items())
            chosen = entries.get(token_id)
            ranked = sorted(entries.items(), key=lambda kv: (kv[1].rank is None, kv[1].rank or 0, -kv[1].logprob))
            top = [(_decoded(e, tid, decode), float(e.logprob)) for tid, e in ranked[:top_logprobs]]
            logprobs.append(
                TokenLogprob(
                    _decoded(chosen, token_id, decode) if chosen is not None else decode(token_id),
                    float(chosen.logprob) if chosen is not None else float("nan"),
                    top,
                )
            )
    prompt_ids = getattr(output, "prompt_token_ids", None)
    return Completion(
        text=first.text,
        logprobs=logprobs,
        prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
        completion_tokens=len(token_ids),
        latency_s=latency_s,
    )
