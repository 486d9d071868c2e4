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

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tapir.errors import ConfigError
from tapir.validation_messages import OPTIONS, problems


class Options(BaseModel):
    """Base of every component's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True,
                              protected_namespaces=())


def option(default: Any = ..., doc: str = "", *, factory: bool = False, **constraints: Any) -> Any:
    """A declared option: its default and one line of doc (``ge=``, ``le=`` ... pass through).
    ``factory=True``: ``default`` is called for each instance (``option(dict, "...", factory=True)``)."""
    if factory:
        return Field(default_factory=default, description=doc, **constraints)
    return Field(default, description=doc, **constraints)


class NoOptions(Options):
    """For components that take no options."""


# --------------------------------------------------------------------------- shared option types


def comma_list(value: Any) -> Any:
    """A list given as a list, a JSON list string, a comma-separated string
    (``-o categories=writing,math``) or one value."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed]
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    return value  # pydantic reports what it is


def json_object(value: Any) -> Any:
    """A mapping given as a mapping or a JSON object string
    (``-o judge_options='{"api_base": "http://..."}'``)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value  # pydantic reports "should be a valid dictionary"
        return parsed
    return value


#: A list of names: a list, a JSON list or a comma-separated string ("" and null: None).
CommaList = Annotated[list[str] | None, BeforeValidator(comma_list)]
#: A mapping: a mapping or a JSON object string.
JsonDict = Annotated[dict[str, Any], BeforeValidator(json_object)]


class _InputFile:
    def __repr__(self) -> str:
        return "InputFile"


_INPUT_FILE = _InputFile()
#: A file the component reads: preflight checks that it exists before
#: anything runs (a relative path is read from the config's folder).
InputFile = Annotated[str, _INPUT_FILE]


class _OutputFolder:
    def __repr__(self) -> str:
        return "OutputFolder"


_OUTPUT_FOLDER = _OutputFolder()
#: A folder the component writes what it makes into (a trained classifier):
#: a relative path is read from the config's folder; unset, the pipeline
#: gives it a folder among the run's outputs.
OutputFolder = Annotated[str, _OUTPUT_FOLDER]


def _declared(model: type[BaseModel], marker: Any) -> list[str]:
    import typing

    def marked(annotation: Any) -> bool:
        if typing.get_origin(annotation) is Annotated:
            return any(m is marker for m in typing.get_args(annotation)[1:])
        return any(marked(a) for a in typing.get_args(annotation))

    return [name for name, field in model.model_fields.items()
            if marked(field.annotation) or any(m is marker for m in field.metadata)]


def input_files(model: type[BaseModel]) -> list[str]:
    """The options of ``model`` declared as :data:`InputFile` (or ``InputFile | None``)."""
    return _declared(model, _INPUT_FILE)


def output_folders(model: type[BaseModel]) -> list[str]:
    """The options of ``model`` declared as :data:`OutputFolder` (or ``OutputFolder | None``)."""
    return _declared(model, _OUTPUT_FOLDER)


class GenerationOverrides(BaseModel):
    """The ``params`` option of judges and classifiers: generation
    parameters that replace the component's defaults (each unset one keeps
    the default). The names are :class:`tapir.roles.GenerationParams`'."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int | None = Field(None, ge=1, description="most new tokens of a reply")
    temperature: float | None = Field(None, ge=0.0, description="sampling temperature (0: greedy)")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass (sampled replies only)")
    stop: CommaList = Field(None, description="strings that end a reply")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="alternatives asked per token (0: none)")
    seed: int | None = Field(None, description="sampling seed (sampled replies only)")

    def apply(self, defaults: dict[str, Any]) -> Any:
        """:class:`tapir.roles.GenerationParams` from ``defaults`` and the values set here."""
        from tapir.roles import GenerationParams

        merged = {**defaults, **self.model_dump(exclude_none=True)}
        if merged.get("stop") is not None:
            merged["stop"] = tuple(merged["stop"])
        return GenerationParams(**merged)


def generation_params(defaults: dict[str, Any], overrides: "GenerationOverrides | dict[str, Any] | None") -> Any:
    """:class:`tapir.roles.GenerationParams` from a component's ``defaults`` and its ``params`` option."""
    if not isinstance(overrides, GenerationOverrides):
        overrides = GenerationOverrides.model_validate(overrides or {})
    return overrides.apply(defaults)


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
        return problems(exc, model, where, OPTIONS)
    return []


def validate(model: type[BaseModel], values: dict[str, Any] | None, where: str) -> BaseModel:
    """``values`` as a ``model`` instance, or one :class:`ConfigError` listing every problem."""
    problems = option_problems(model, values, where)
    if problems:
        raise ConfigError("\n".join(problems))
    return model.model_validate(values or {})


def describe(model: type[BaseModel]) -> list[dict[str, str]]:
    """One row per option: name, type (Literal values listed, ranges from
    ge / gt / le / lt), default, doc (for ``tapir plugins NAME`` and docs/config.md)."""
    rows = []
    for name, field in model.model_fields.items():
        rows.append({"name": name, "type": type_text(field.annotation, field.metadata),
                     "default": default_text(field), "doc": field.description or ""})
    return rows


def default_text(field: Any) -> str:
    """A field's default as written in Python (``required`` when it has none)."""
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return repr(field.default_factory())
    return repr(field.default)


def _bounds(metadata: Any) -> list[str]:
    """'>= 1', '< 1', 'at least 1 entry' from a field's constraints (annotated_types)."""
    import annotated_types as at

    out = []
    for m in metadata or ():
        if isinstance(m, at.Ge):
            out.append(f">= {m.ge}")
        elif isinstance(m, at.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, at.Le):
            out.append(f"<= {m.le}")
        elif isinstance(m, at.Lt):
            out.append(f"< {m.lt}")
        elif isinstance(m, at.MinLen) and m.min_length:
            out.append(f"at least {m.min_length} {'entry' if m.min_length == 1 else 'entries'}")
        elif isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length} entries")
    return out


def type_text(annotation: Any, metadata: Any = ()) -> str:
    """A type for people: ``int >= 1``, ``one of 'skip', 'error'``,
    ``float > 0, <= 1 or null``, ``list of int >= 0``, ``mapping str -> float``."""
    import types
    import typing

    from pydantic.fields import FieldInfo

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    bounds = _bounds(metadata)
    if origin is typing.Annotated:
        inner = []
        for m in args[1:]:
            inner.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        return type_text(args[0], [*inner, *(metadata or ())])
    if origin is typing.Literal:
        text = "one of " + ", ".join(repr(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        text = " or ".join(parts) + (" or null" if type(None) in args else "")
        if bounds:  # bounds of an optional number belong to the number
            parts[0] = f"{parts[0]} {', '.join(bounds)}"
            text = " or ".join(parts) + (" or null" if type(None) in args else "")
        return text
    elif origin in (list, tuple, set, frozenset):
        inner = type_text(args[0]) if args else ""
        text = (f"list of ({inner})" if " " in inner and inner != "section" else
                f"list of {inner}") if args else "list"
    elif origin is dict:
        text = f"mapping {type_text(args[0])} -> {type_text(args[1])}" if args else "mapping"
    elif annotation is Any:
        text = "any"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "section"
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = str(annotation).replace("typing.", "")
    if bounds and origin in (list, tuple, set, frozenset):
        return f"{text}, {', '.join(bounds)}"
    return f"{text} {', '.join(bounds)}" if bounds else text
