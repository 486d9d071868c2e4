"""Resolving a model id to a backend, and loading it behind the cache.

A model id is one of

* a named model that some plugin registered (``tapir models`` lists them),
* ``BACKEND:NAME`` to pick a backend explicitly (``hf:./my-student``,
  ``vllm:meta-llama/Llama-3-8B``),
* anything a plugin's ``resolve_model`` hook accepts (the litellm plugin
  takes any ``provider/model``; the hf plugin takes local folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapir.errors import TapirError
from tapir.plugins import get_plugin_manager


@dataclass
class ModelSpec:
    model_id: str
    backend: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def resolve(model_id: str, options: dict[str, Any] | None = None) -> ModelSpec:
    pm = get_plugin_manager()
    reg = pm.registry
    opts = dict(options or {})
    named = reg.by_role["models"].get(model_id)
    if named is not None:
        if not named.available:
            raise TapirError(f"model '{model_id}' is unavailable: {named.reason}")
        merged = {**named.options.get("options", {}), **opts}
        return ModelSpec(model_id, named.options["backend"], named.options.get("model", model_id), merged)
    prefix, sep, rest = model_id.partition(":")
    if sep and prefix in reg.by_role["backends"] and rest:
        return ModelSpec(model_id, prefix, rest, opts)
    answer = pm.hook.resolve_model(model_id=model_id)
    if answer is not None:
        backend, name, extra = answer
        return ModelSpec(model_id, backend, name, {**(extra or {}), **opts})
    known = ", ".join(reg.names("models")) or "none"
    backends = ", ".join(reg.names("backends")) or "none"
    raise TapirError(
        f"unknown model '{model_id}'. Named models: {known}. "
        f"Or write BACKEND:NAME with a backend from: {backends}; "
        f"API models need the litellm plugin (provider/model, e.g. openai/gpt-4o-mini)."
    )


def load_backend(model_id: str, options: dict[str, Any] | None = None):
    """The raw backend (no cache). Most callers want :func:`load_cached`."""
    spec = resolve(model_id, options)
    component = get_plugin_manager().registry.get("backends", spec.backend)
    return component.create(spec.name, options=spec.options)


def load_cached(model_id: str, store, run_id: str | None = None, options: dict[str, Any] | None = None,
                refresh: bool = False):
    """The backend for ``model_id`` behind the LLM-call cache (``refresh``:
    skip look-ups, so every call is sent again and recorded)."""
    from tapir.cache import CachedBackend

    return CachedBackend(load_backend(model_id, options), store, run_id, refresh=refresh)
