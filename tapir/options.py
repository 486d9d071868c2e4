"""Declared options of components (judges, teachers, trainers, backends, ...).

Every component class declares what it accepts as a nested ``Options``
model (pydantic, unknown keys forbidden, one line of doc per field)::

    class PairwiseJudge:
        class Options(tapir.options.Options):
            both_orders: bool = option(True, "judge in both orders and average")

        def __init__(self, backend, options: "PairwiseJudge.Options"): ...

The core validates a config's options against that model before anything is
written or called (preflight), so a typo is an error naming the key and what
is allowed, never a keyword argument swallowed or a ``TypeError`` after paid
calls. ``tapir plugins NAME`` and docs/config.md are generated from these
models.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tapir.errors import ConfigError


class Options(BaseModel):
    """Base of every component's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())


def option(default: Any = ..., doc: str = "", *, factory: bool = False, **constraints: Any) -> Any:
    """A declared option: its default and one line of doc (``ge=``, ``le=`` ... pass through).
    ``factory=True``: ``default`` is called for each instance (``option(dict, "...", factory=True)``)."""
    if factory:
        return Field(default_factory=default, description=doc, **constraints)
    return Field(default, description=doc, **constraints)


class NoOptions(Options):
    """For components that take no options."""


def options_model(factory: Any) -> type[Options]:
    """The ``Options`` model a component factory declares (``NoOptions`` if none)."""
    model = factory.__dict__.get("Options") if isinstance(factory, type) else None
    if model is None and isinstance(factory, type):
        for klass in factory.__mro__:
            if "Options" in klass.__dict__:
                model = klass.__dict__["Options"]
                break
    if model is None:
        model = getattr(factory, "Options", None)  # a function factory may carry it too
    return model if isinstance(model, type) and issubclass(model, BaseModel) else NoOptions


def option_problems(model: type[BaseModel], values: dict[str, Any] | None, where: str) -> list[str]:
    """Every problem with ``values`` for ``model``, one line each, naming
    ``where`` (e.g. ``config.yaml: judge.options``)."""
    try:
        model.model_validate(values or {})
    except ValidationError as exc:
        return _format(exc, model, where)
    return []


def validate(model: type[BaseModel], values: dict[str, Any] | None, where: str) -> BaseModel:
    """``values`` as a ``model`` instance, or one :class:`ConfigError` listing every problem."""
    problems = option_problems(model, values, where)
    if problems:
        raise ConfigError("\n".join(problems))
    return model.model_validate(values or {})


def _format(exc: ValidationError, model: type[BaseModel], where: str) -> list[str]:
    allowed = sorted(model.model_fields)
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{where}: unknown option '{loc}'.{hint} Allowed: {', '.join(allowed) or 'none'}")
        elif err["type"] == "missing":
            doc = model.model_fields[str(err["loc"][0])].description if err["loc"] else ""
            lines.append(f"{where}: missing required option '{loc}'" + (f" ({doc})" if doc else ""))
        else:
            got = err.get("input")
            got_text = f" (got {got!r:.60})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"{where}: option '{loc}': {err['msg']}{got_text}")
    return lines


def describe(model: type[BaseModel]) -> list[dict[str, str]]:
    """One row per option: name, type, default, doc (for ``tapir plugins NAME`` and docs/config.md)."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = repr(field.default_factory())
        else:
            default = repr(field.default)
        rows.append({"name": name, "type": type_name, "default": default, "doc": field.description or ""})
    return rows
