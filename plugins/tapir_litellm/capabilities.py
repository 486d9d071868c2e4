"""The litellm backend's capabilities (tapir.roles.CAPABILITIES): what a call
to a model would need and cost, found without sending anything. Registered
with ``register("litellm", ..., capabilities="tapir_litellm.capabilities")``;
this module imports litellm only inside :func:`price`."""

from __future__ import annotations

import os
from typing import Any


def missing_credentials(model_name: str, options: Any) -> list[str]:
    """Environment variables a call to ``model_name`` with ``options`` (a
    dict or the backend's Options) needs and does not find: the variable
    ``api_key_env`` names, else the provider's key (none for a self-hosted
    OpenAI-compatible server), else what litellm's own per-provider table
    asks (base-URL variables left out: they have defaults)."""
    from tapir_litellm.backend import LiteLLMBackend

    return LiteLLMBackend.missing_credentials(model_name, options)  # the one check generate() makes too


def served_at(options: dict[str, Any], bases: list[str]) -> dict[str, Any]:
    """``options`` with the servers tapir started: ``api_base`` for one,
    ``api_bases`` (the backend's server pool) for several; unchanged when
    the config names a server already."""
    if options.get("api_base") or options.get("api_bases"):
        return dict(options)
    return {**options, **({"api_base": bases[0]} if len(bases) == 1 else {"api_bases": list(bases)})}


def price(model_name: str, tokens_in: int, tokens_out: int) -> float | None:
    """Estimated USD from litellm's local price map (the one installed with
    litellm; nothing is downloaded). None when the model has no price there."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    try:
        import litellm
    except ImportError:  # the api extra is not installed
        return None
    name = model_name.split("/", 1)[1] if model_name.startswith("openai/") else model_name
    entry = litellm.model_cost.get(model_name) or litellm.model_cost.get(name)
    if not entry:
        return None
    return tokens_in * float(entry.get("input_cost_per_token") or 0) + tokens_out * float(
        entry.get("output_cost_per_token") or 0)
