"""A config from YAML (or a dict) with ``--set KEY=VALUE`` overrides
applied, validated into a :class:`~tapir.config.schema.PipelineConfig`."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tapir.config.paths import config_base
from tapir.config.schema import PipelineConfig
from tapir.config.validation import check_pipeline_references, format_validation_error
from tapir.config.yamlfile import read_yaml_document
from tapir.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}. Pass the path of a YAML file (see configs/ for examples).")
    data = read_yaml_document(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys (name:, data:, teacher:, ...)")
    return data


def config_source(config: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] | None = None) -> str:
    """How messages name a config: its file ('config' for a dict), and the
    ``--set`` overrides applied to it."""
    source = "config" if isinstance(config, dict) else str(config)
    return source + (" (with --set " + " ".join(overrides) + ")" if overrides else "")


def parse(data: dict[str, Any], model: type[BaseModel] = PipelineConfig, source: str = "config"):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def _set_parts(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item}: give KEY=VALUE, e.g. --set mfd.delta=1.5 or "
                          f"--set curriculum.expand_per_round.0=5")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {item}: '{key}' has an empty part; write dotted keys such as trainer.options.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: the value is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"--set {item:.60}: the value nests lists or mappings too deeply to read") from None
    if isinstance(value, str) and _FLOAT.fullmatch(raw.strip()):
        value = float(value)  # PyYAML reads 1e-4 (no dot) as a string
    return parts, value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_key(parts: list[str], item: str) -> None:
    """Every part of a dotted key names a field of the config (up to a
    free-form mapping such as ``trainer.options``)."""
    current: Any = PipelineConfig
    in_list = False  # current is the item model of a list field: the next part is an index
    for i, part in enumerate(parts):
        if in_list and part.lstrip("-").isdigit():
            in_list = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return  # a dict of options, a list of scalars, or a scalar: checked on validation
        if part not in current.model_fields:
            allowed = sorted(current.model_fields)
            close = difflib.get_close_matches(part, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--set {item}: unknown key '{'.'.join(parts[: i + 1])}'.{hint} "
                              f"Allowed here: {', '.join(allowed)}")
        annotation = current.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        in_list = getattr(annotation, "__origin__", None) is list


def _one_student_kind(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """``--set students=[...]`` on a config with ``student:`` (or ``--set
    student=...`` on one with ``students:``) replaces the other key: a config
    has one or the other. A bare model id in the new ``students`` list takes
    the replaced ``student`` entry's options and generation settings."""
    import copy

    if parts == ["students"] and value:
        template = data.pop("student", None)
        if isinstance(template, dict) and isinstance(value, list):
            value[:] = [{**copy.deepcopy(template), "model": v} if isinstance(v, str) else v for v in value]
    elif parts == ["student"] and value:
        data.pop("students", None)


def apply_overrides(data: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of config ``data`` with each ``KEY=VALUE`` of ``sets`` applied:
    dotted keys (``trainer.options.lr=1e-4``), list indices
    (``curriculum.expand_per_round.0=5``; the index one past the end
    appends), YAML-parsed values (``3``, ``null``, ``[1, 2]``, ``{a: 1}``).
    Mappings on the way are created when missing. A key the config does not
    have is a :class:`ConfigError` naming it; values are validated with the
    rest of the config."""
    import copy

    out = copy.deepcopy(data)
    for item in sets or ():
        parts, value = _set_parts(item)
        _check_key(parts, item)
        _one_student_kind(out, parts, value)
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i]) or "the config"
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise ConfigError(f"--set {item}: '{where}' is a list; index it with a number, got '{part}'")
                index = int(part)
                if not -len(node) <= index <= len(node):
                    raise ConfigError(f"--set {item}: index {index} is outside '{where}' "
                                      f"({len(node)} entries; {len(node)} appends)")
                if index == len(node):
                    node.append({} if not last else None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = {}
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {item}: '{where}' is {type(node).__name__} {node!r:.40}, "
                                  f"not a mapping or a list")
    return out


def load_config(path: str | Path | dict[str, Any], check_references: bool = True,
                overrides: list[str] | tuple[str, ...] | None = None) -> PipelineConfig:
    """The validated config of a YAML file (or of a dict: relative paths are
    then read from the working directory), with ``--set`` ``overrides``
    applied before validation."""
    data = dict(path) if isinstance(path, dict) else read_yaml(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
    source = config_source(path, overrides)
    config = parse(data, PipelineConfig, source)
    if check_references:
        problems = check_pipeline_references(config, config_base(path), source)
        if problems:
            raise ConfigError("\n".join(problems))
    return config
