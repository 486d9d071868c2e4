"""What a component offers beyond its role's protocol (tapir.roles
CAPABILITIES), asked through the registry with the component's validated
options. Each returns None (or the caller's default) when the component does
not offer it; preflight, the dry run and the stages call these, never a
component's attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tapir.errors import TapirError

if TYPE_CHECKING:
    from tapir.config.schema import PipelineConfig
    from tapir.roles import CallEstimate, GenerationParams


def estimate(role: str, name: str, options: dict[str, Any], stage: str, n: int, prompt_tokens: int,
             default: "CallEstimate") -> list["CallEstimate"]:
    """The calls component ``name`` of ``role`` makes in ``stage`` for ``n``
    items: its ``estimate`` capability, else ``default`` (one call per item)."""
    from tapir.plugins import registry

    component = registry().get(role, name)
    if "estimate" not in component.capabilities:
        return [default]
    validated = component.options_model().model_validate(options)
    return list(component.capability("estimate")(stage, n, prompt_tokens, validated))


def generation(role: str, name: str, options: dict[str, Any]) -> "GenerationParams | None":
    """The generation parameters component ``name`` of ``role`` (judges,
    classifiers) samples with, given its ``options``: its ``generation``
    capability (None when it has none, is unknown, or its options are wrong:
    preflight reports those)."""
    found = _checked_capability(role, name, options, "generation")
    return None if found is None else found[0](found[1])


def input_problems(role: str, name: str, options: dict[str, Any]) -> list[str]:
    """What component ``name`` of ``role`` finds wrong with the files its
    ``options`` name (paths resolved by the caller): its ``input_problems``
    capability ([] when it has none, is unknown, or its options are wrong:
    preflight reports those)."""
    found = _checked_capability(role, name, options, "input_problems")
    return [] if found is None else list(found[0](found[1]))


def _checked_capability(role: str, name: str, options: dict[str, Any], capability: str) -> tuple[Any, Any] | None:
    """(``capability`` of component ``name`` of ``role``, its validated
    ``options``); None when it lacks the capability, is unknown, or its
    options are wrong (preflight reports those)."""
    from tapir.plugins import registry

    try:
        component = registry().get(role, name)
        validated = component.options_model().model_validate(options)
    except Exception:  # noqa: BLE001 - reported by preflight already
        return None
    if capability not in component.capabilities:
        return None
    return component.capability(capability), validated


def steps_for(config: PipelineConfig, examples: int) -> int | None:
    """Optimizer steps of one training round: the trainer's ``steps_for``
    capability with its own options (None when it has none)."""
    from tapir.plugins import registry

    try:
        component = registry().get("trainers", config.trainer.name)
        options = component.options_model().model_validate(config.trainer.options)
    except Exception:  # noqa: BLE001 - reported by preflight already
        return None
    if "steps_for" not in component.capabilities:
        return None
    return component.capability("steps_for")(options, examples)


def backend_capability(model: str, options: dict[str, Any] | None, name: str):
    """``(spec, capability)`` for the backend that serves ``model``: its
    capability ``name`` (tapir.roles.CAPABILITIES) and the resolved model
    spec; None when the model does not resolve or its backend lacks it."""
    from tapir.models import resolve
    from tapir.plugins import registry

    try:
        spec = resolve(model, options)
        component = registry().get("backends", spec.backend)
    except TapirError:
        return None
    if name not in component.capabilities:
        return None
    return spec, component.capability(name)


def price(model: str, input_tokens: int, output_tokens: int, *, options: dict[str, Any] | None = None
          ) -> float | None:
    """Estimated $ for ``model``: its backend's ``price`` capability (None
    when the backend has none or the model has no known price)."""
    found = backend_capability(model, options, "price")
    if found is None:
        return None
    spec, price_of = found
    return price_of(spec.name, input_tokens, output_tokens)
