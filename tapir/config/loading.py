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
from tapir.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping
    anywhere in the document (plain YAML keeps the last one silently: a
    second ``curriculum:`` would replace the first section). Keys brought in
    by a merge (``<<: *anchor``) may be overridden."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise _DuplicateKeys(duplicates)
        return self.construct_document(node)


class _DuplicateKeys(Exception):
    def __init__(self, found: list[tuple[str, int, int]]):
        self.found = found  # (dotted key, first line, repeated line), 1-based


def _duplicate_keys(node, path: tuple[str, ...] = (),
                    visited: set[int] | None = None) -> list[tuple[str, int, int]]:
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: already checked where its anchor is
        return []
    visited.add(id(node))
    found: list[tuple[str, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                found.append((".".join([*path, key_node.value]), seen[key], line))
            else:
                seen[key] = line
            found += _duplicate_keys(value_node, (*path, key_node.value), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",), visited)
    return found


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}. Pass the path of a YAML file (see configs/ for examples).")
    data = read_yaml_document(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys (name:, data:, teacher:, ...)")
    return data


def read_yaml_document(p: Path) -> Any:
    """The YAML document in file ``p``, whatever its top level, read as a
    config is: UTF-8, a key given twice in one mapping refused, errors as
    one :class:`ConfigError` naming the line."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}). "
                          f"Save the config as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeys as dup:
        found = sorted(dup.found, key=lambda d: d[2])
        raise ConfigError("\n".join(
            f"{p} line {again}: duplicate key '{key}' (first given at line {first}); YAML would keep only "
            f"the last one, silently. Merge the two into one" for key, first, again in found
        )) from None
    except RecursionError:  # the parser (and the duplicate-key check) give up a thousand levels deep
        raise ConfigError(f"{p}: not usable YAML: lists or mappings nested too deeply to read. Fix the file "
                          f"(a config nests a few levels: section, key, value)") from None
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML says only "position N" of the text
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise ConfigError(f"{p} at line {line}, column {column}: not valid YAML: the control character "
                          f"U+{exc.character:04X} is not allowed (a binary or damaged file?). Remove it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return data


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
    if isinstance(path, dict):
        data, source = dict(path), "config"
    else:
        data, source = read_yaml(path), str(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
        source += " (with --set " + " ".join(overrides) + ")"
    config = parse(data, PipelineConfig, source)
    if check_references:
        problems = check_pipeline_references(config, config_base(path), source)
        if problems:
            raise ConfigError("\n".join(problems))
    return config
