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
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

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


class GenerationOverrides(BaseModel):
    """The ``params`` option of judges and classifiers: generation
    parameters that replace the component's defaults (each unset one keeps
    the default). The names are :class:`tapir.roles.GenerationParams`'."""

    model_config = ConfigDict(extra="forbid")

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
        return _format(exc, model, where)
    return []


def validate(model: type[BaseModel], values: dict[str, Any] | None, where: str) -> BaseModel:
    """``values`` as a ``model`` instance, or one :class:`ConfigError` listing every problem."""
    problems = option_problems(model, values, where)
    if problems:
        raise ConfigError("\n".join(problems))
    return model.model_validate(values or {})


def _owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class whose key is the last part of ``loc`` (a nested option
    such as ``params.temperatre`` belongs to the ``params`` model)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or _is_tag(part):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


# Option names that hold a credential (``api_key``, ``hf_token``; not ``api_key_env`` or ``max_new_token``).
_SECRET = re.compile(r"^(?:(?:\w+_)?(?:api_?key|secret|password)|(?:hf_|api_|access_|auth_|bearer_)?token)$")


def _is_secret(key: str) -> bool:
    low = key.lower()
    return bool(_SECRET.match(low)) and not low.startswith(("max_", "min_", "top_"))


def _format(exc: ValidationError, model: type[BaseModel], where: str) -> list[str]:
    lines = []
    for err in exc.errors():
        parts = tuple(p for p in err["loc"] if not _is_tag(p))
        loc = ".".join(str(p) for p in parts)
        if err["type"] == "extra_forbidden":
            owner = _owner(model, parts) or model
            allowed = sorted(owner.model_fields)
            key = str(parts[-1])
            if _is_secret(key):
                env_hint = (" with api_key_env naming the variable (e.g. api_key_env: MY_KEY)"
                            if "api_key_env" in allowed else "")
                lines.append(f"{where}: '{loc}' holds a credential: keys never go into a config (it is stored "
                             f"with the run). Remove it and export the key as an environment variable instead"
                             f"{env_hint}")
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{where}: unknown option '{loc}'.{hint} Allowed: {', '.join(allowed) or 'none'}")
        elif err["type"] == "missing":
            doc = model.model_fields[str(err["loc"][0])].description if err["loc"] else ""
            lines.append(f"{where}: missing required option '{loc}'" + (f" ({doc})" if doc else ""))
        else:
            got = err.get("input")
            got_text = f" (got {got!r:.60})" if got is not None and not isinstance(got, dict) else ""
            if any(_is_secret(str(p)) for p in parts):
                got_text = ""  # never echo a credential
            lines.append(f"{where}: option '{loc}': {err['msg']}{got_text}")
    return lines


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
