"""Fresh draws: what a re-run asks for an item whose reply failed on its
content (malformed, too long, rejected by a check, no score in a judge
reply).

The LLM cache serves a request's recorded reply again, so asking the same
request again would get the same failed reply and pay nothing to learn
nothing. A re-run instead asks with the next *sample index* (a new cache key;
API backends also send a seed derived from it, so a server that honours
seeds answers differently even at temperature 0), up to
``failures.max_draws`` draws per item (:class:`tapir.pipeline.engine.Job`
counts them in ``outcomes.draws``).

Some failures no fresh draw changes: greedy decoding at temperature 0 from a
local model (transformers, vLLM in process) gives the same reply to the same
prompt whatever the sample index. Those are recorded as reproducing, a
re-run does not ask again, and the reason names the option that changes it.
"""

from __future__ import annotations

def reproduces(model: str | None, temperature: float) -> bool:
    """Whether asking ``model`` again, at ``temperature``, with another sample
    index gives the same reply: greedy decoding from a local model."""
    if model is None or temperature > 0:
        return False
    from tapir.models import backend_flag, resolve

    try:
        return backend_flag(resolve(model).backend, "local_weights")
    except Exception:  # noqa: BLE001 - an id only a plugin or a test knows: assume a draw may differ
        return False

