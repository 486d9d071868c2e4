"""docs/config.md, generated from the code: the pipeline config's sections
and every option every built-in component declares.

    python -m tapir.configdoc > docs/config.md

tests/test_configdoc.py fails when the file is not current.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

ROLE_TITLES = {
    "backends": "Backends (model.options)",
    "teachers": "Teachers (teacher.options)",
    "judges": "Judges (judge.options)",
    "classifiers": "Classifiers (classifier.options)",
    "rewriters": "Rewriters (rewriter.options)",
    "trainers": "Trainers (trainer.options)",
    "evaluators": "Benchmarks (tapir bench run NAME -o KEY=VALUE)",
    "encoders": "Encoders (expansion.encoder)",
}
BUILTIN_PLUGINS = {"hf", "litellm", "vllm", "judges", "trainers", "classifiers", "teachers", "mtbench", "alpacaeval",
                   "lmeval", "trl"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return ["(no options)"]
    lines = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {_cell(r['type'])} | `{_cell(r['default'])}` | {_cell(r['doc'])} |")
    return lines


def option_table(model: type[BaseModel]) -> list[str]:
    return _table(key_rows(model))


def section_of(annotation) -> tuple[type[BaseModel] | None, str]:
    """The section model a field holds (directly, as ``X | None`` or as a
    list of X) and the suffix its keys take (``""`` or ``"[]"``)."""
    import typing

    candidates = [(annotation, "")]
    for arg in typing.get_args(annotation):
        candidates.append((arg, ""))
        if typing.get_origin(annotation) is list:
            candidates[-1] = (arg, "[]")
    for candidate, suffix in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate, suffix
    return None, ""


def key_rows(model: type[BaseModel], prefix: str = "", nested: bool = True,
             defaults: BaseModel | None = None) -> list[dict[str, str]]:
    """Every key of ``model``, nested sections spelled out as dotted keys
    (``generation.max_new_tokens``; a list of sections as ``benchmarks[].name``)
    unless ``nested`` is false. ``defaults``: the section's default instance,
    whose values are its keys' defaults (``expansion.generation`` samples,
    a bare ``Generation`` does not)."""
    from tapir.options import describe

    rows = []
    for row in describe(model):
        key = row["name"]
        section, suffix = section_of(model.model_fields[key].annotation)
        value = getattr(defaults, key) if defaults is not None else None
        row = {**row, "name": prefix + key}
        if defaults is not None:
            row["default"] = repr(value)
        if isinstance(value, BaseModel) or (section is not None and row["default"].startswith(f"{section.__name__}(")):
            row["default"] = "(its keys' defaults)"
        rows.append(row)
        if section is not None and nested:
            field = model.model_fields[key]
            if not isinstance(value, BaseModel) and field.default_factory is not None and not suffix:
                value = field.default_factory()
            rows += key_rows(section, f"{row['name']}{suffix}.", defaults=value if isinstance(value, BaseModel)
                             else None)
    return rows


def pipeline_keys() -> list[dict[str, str]]:
    """Every key of the pipeline config, dotted from the top (``curriculum.alpha``)."""
    from tapir.config import PipelineConfig

    return key_rows(PipelineConfig)


def config_sections() -> list[str]:
    from tapir.config import PipelineConfig

    lines = ["## The pipeline config (tapir distill CONFIG)", "",
             "Types: `one of` lists the allowed values; `>=`, `>`, `<=`, `<` are the allowed range; `null` is",
             "YAML's null (the key's default meaning). Unknown keys are errors.", "",
             "### Top-level keys", ""]
    lines += _table(key_rows(PipelineConfig, nested=False)) + [""]
    for name, field in PipelineConfig.model_fields.items():
        section, suffix = section_of(field.annotation)
        if section is None:
            continue
        default = field.default_factory() if field.default_factory is not None and not suffix else None
        lines += [f"### `{name}{suffix}`", "", _cell(field.description or ""), ""]
        lines += _table(key_rows(section, defaults=default if isinstance(default, BaseModel) else None)) + [""]
    return lines


def render() -> str:
    from tapir.plugins import ROLES, registry

    reg = registry()
    lines = ["# Configuration reference", "",
             "Generated from the code by `python -m tapir.configdoc > docs/config.md`; do not edit by hand.",
             "Every option is checked before anything is written or called (preflight): an unknown key, a wrong",
             "type or a value out of range is an error naming the key.", ""]
    lines += config_sections()
    for role in ROLES:
        if role not in ROLE_TITLES:
            continue
        comps = [c for c in sorted(reg.by_role[role].values(), key=lambda c: c.name) if c.plugin in BUILTIN_PLUGINS]
        if not comps:
            continue
        lines += [f"## {ROLE_TITLES[role]}", ""]
        for c in comps:
            lines += [f"### `{c.name}` ({c.plugin})", "", _cell(c.description) or "", ""]
            if c.requires:
                extra = f"`{c.extra}` extra" if c.extra else "its packages"
                lines += [f"Needs {', '.join(c.requires)} ({extra}).", ""]
            try:
                lines += option_table(c.options_model()) + [""]
            except ImportError as exc:
                lines += [f"Options listed where it is installed ({exc}).", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
