"""What a stage may read, enforced: the config fields it declares
(``reads``) and the upstream nodes it declares (``upstream``).

A stage's key hashes exactly what it declares (see
:mod:`tapir.pipeline.engine`), so a read it does not declare is a stage
whose key stays the same when its input changes: a wrong reuse. While a
stage runs, it sees the config through a :class:`ConfigView` that refuses
any field outside its ``reads`` with :class:`UndeclaredRead`, in tests and
in production alike. Using a role (``ctx.teacher``, ``ctx.judge(...)``,
``ctx.trainer``) reads that role's config section through the same view.
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel

# Backend options that change speed, not results: left out of stage keys
# (a stage may still read them; editing them re-runs nothing).
SPEED_OPTIONS = frozenset({"batch_size", "concurrency", "max_batch_tokens", "timeout", "max_retries", "chunk_size"})
# Fields of student.serve that say where and how many servers run, not what they answer.
SERVE_SPEED_FIELDS = frozenset({"port", "ready_timeout_s", "replicas", "gpus_per_replica"})


class UndeclaredRead(RuntimeError):
    """A stage read a config field or an upstream node it does not declare:
    a bug in the stage, not in the config (never caught by the CLI as a
    user error)."""


def covers(declared: str, path: str) -> bool:
    """Whether declaring ``declared`` covers reading ``path`` (itself or a field under it)."""
    return path == declared or path.startswith(declared + ".")


class ConfigView:
    """The config as stage ``stage`` may read it: an attribute under a
    declared path is the config's own value; a section that only holds
    declared paths deeper down is a view of that section; anything else
    raises :class:`UndeclaredRead` naming the stage and the field."""

    __slots__ = ("_value", "_reads", "_stage", "_path")

    def __init__(self, value: Any, reads: Iterable[str], stage: str, path: str = ""):
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_reads", tuple(reads))
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy / pickle protocol probes: not config fields
            raise AttributeError(name)
        path = f"{self._path}.{name}" if self._path else name
        if any(covers(r, path) for r in self._reads):
            return getattr(self._value, name)
        if any(r.startswith(path + ".") for r in self._reads):
            value = getattr(self._value, name)
            # None: the declared fields below it are None too, and their value is in the key.
            return None if value is None else ConfigView(value, self._reads, self._stage, path)
        raise UndeclaredRead(
            f"stage '{self._stage}' read config field '{path}', which it does not declare in its reads "
            f"({', '.join(self._reads) or 'none'}): declare it (so its key changes when the field does) "
            f"or stop reading it")

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"stage '{self._stage}' tried to set config field '{name}': the config is read-only")

    def __repr__(self) -> str:
        return f"ConfigView({self._stage}: {self._path or 'config'}, reads {list(self._reads)})"


def config_value(config: Any, path: str) -> Any:
    """The value at dotted ``path`` of a pydantic config (JSON-ready), as a
    stage key holds it: backend options that only change speed
    (:data:`SPEED_OPTIONS`) are left out of every model reference."""
    value: Any = config
    parent: Any = None
    for part in path.split("."):
        if value is None:
            return None
        parent = value
        value = value.get(part) if isinstance(value, dict) else getattr(value, part)
    if part == "options" and _is_backend_ref(parent) and isinstance(value, dict):
        return _without_speed(value)
    return _dump(value)


def _is_backend_ref(value: Any) -> bool:
    from tapir.config.schema import ModelRef, ServeConfig

    return isinstance(value, (ModelRef, ServeConfig))


def _without_speed(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in SPEED_OPTIONS}


def _dump(value: Any) -> Any:
    """JSON-ready, with speed options left out of every model reference inside."""
    if not isinstance(value, BaseModel):
        return value
    dumped = value.model_dump(mode="json")
    if _is_backend_ref(value):
        dumped["options"] = _without_speed(dumped.get("options") or {})
    if type(value).__name__ == "ServeConfig":
        dumped = {k: v for k, v in dumped.items() if k not in SERVE_SPEED_FIELDS}
    for name in type(value).model_fields:
        inner = getattr(value, name)
        if isinstance(inner, BaseModel):
            dumped[name] = _dump(inner)
        elif isinstance(inner, list) and any(isinstance(x, BaseModel) for x in inner):
            dumped[name] = [_dump(x) for x in inner]
    return dumped
