"""Resolving a model id to a backend, and loading it behind the cache.

One rule for every command (docs/models.md), tried in this order:

1. a named model that some plugin registered (``tapir models`` lists them);
2. ``BACKEND:NAME`` picks a backend explicitly (``hf:org/name`` for a hub
   model run locally by transformers, ``hf:./my-student``,
   ``vllm:meta-llama/Llama-3-8B``);
3. a local folder holding a transformers model (``config.json``) is ``hf``;
4. ``PROVIDER/MODEL`` where PROVIDER is a litellm provider
   (``openai/gpt-4o-mini``, ``anthropic/...``, ``hosted_vllm/...``) is an API
   model served by litellm;
5. anything else a plugin's ``resolve_model`` hook accepts.

``org/name`` whose ``org`` is not a litellm provider is none of these: it is
refused with ``did you mean hf:org/name?`` (a hub id is never guessed to be
an API model, nor the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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
    org = hub_org(model_id)
    # The backend that runs a hub model locally (trainable), and one that
    # serves API models (it prices its calls): named in the hint, never assumed.
    local = next((n for n in reg.names("backends") if backend_flag(n, "trainable")), None)
    api = next((n for n in reg.names("backends") if "price" in reg.by_role["backends"][n].capabilities), None)
    if org is not None and local is not None:
        folder = Path(model_id).expanduser()
        if folder.is_dir():
            raise TapirError(
                f"unknown model '{model_id}': the folder {folder} holds no config.json, so it is not a "
                f"transformers model. Point at the folder that has config.json (e.g. a checkpoint's), or "
                f"write {local}:{model_id} for the hub model of that name. See docs/models.md"
            )
        provider = (f"'{org}' is not a {api} provider, and " if api is not None
                    else "the litellm plugin (API models) is not loaded, and ")
        raise TapirError(
            f"unknown model '{model_id}': did you mean {local}:{model_id}? {provider}no local folder has that name. "
            f"A Hugging Face hub model run locally by transformers is written {local}:ORG/NAME; an API model is "
            f"PROVIDER/MODEL with a litellm provider (openai/gpt-4o-mini, anthropic/..., hosted_vllm/...). "
            f"Named models: {known}. See docs/models.md"
        )
    raise TapirError(
        f"unknown model '{model_id}'. Named models: {known}. "
        f"Or write BACKEND:NAME with a backend from: {backends}; "
        f"API models need the litellm plugin (provider/model, e.g. openai/gpt-4o-mini)."
    )


def backend_flag(backend: str, flag: str) -> bool:
    """A flag backend ``backend`` declares (tapir.roles.FLAGS: ``local_weights``,
    ``trainable``), as the registry recorded it; False when it declares none
    or is unknown."""
    component = get_plugin_manager().registry.by_role["backends"].get(backend)
    return bool(component is not None and component.flags.get(flag))


def hub_org(model_id: str) -> str | None:
    """``org`` when ``model_id`` is shaped like a hub repo id ``org/name``
    (one slash, no scheme or path prefix), else None."""
    if model_id.startswith(("/", ".", "~")) or ":" in model_id or "\\" in model_id:
        return None
    org, sep, name = model_id.partition("/")
    if not sep or not org or not name or "/" in name or " " in model_id:
        return None
    return org


def error_hint(model_id: str, error: str | None) -> str:
    """A hint to add to a backend's error about ``model_id``: litellm's
    "LLM Provider NOT provided" for a hub-shaped id means hf:org/name was meant."""
    if error and "LLM Provider NOT provided" in error and hub_org(model_id) is not None:
        return (f" -- did you mean hf:{model_id}? '{hub_org(model_id)}' is not a litellm provider; a Hugging Face "
                f"hub model run locally is written hf:ORG/NAME (see docs/models.md)")
    return ""


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

    backend = load_backend(model_id, options)
    if (options or {}).get("batch"):
        backend.attach_store(store)  # batch backends keep their batch ids in the store (resumable)
    return CachedBackend(backend, store, run_id, refresh=refresh)
