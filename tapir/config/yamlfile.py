"""A YAML file read as tapir reads its configs: UTF-8, a key given twice in
one mapping refused with both lines, every error one :class:`ConfigError`
naming the file and line. Configs (:mod:`tapir.config.loading`) and bench
suites read through it; it imports nothing of the config's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
