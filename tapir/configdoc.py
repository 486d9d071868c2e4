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


def option_table(model: type[BaseModel]) -> list[str]:
    from tapir.options import describe

    rows = describe(model)
    if not rows:
        return ["(no options)"]
    lines = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {_cell(r['type'])} | `{_cell(r['default'])}` | {_cell(r['doc'])} |")
    return lines


def config_sections() -> list[str]:
    from tapir.config import PipelineConfig

    lines = ["## The pipeline config (tapir distill CONFIG)", ""]
    for name, field in PipelineConfig.model_fields.items():
        annotation = field.annotation
        inner = [a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        if inner:
            lines += [f"### `{name}`", ""] + option_table(inner[0]) + [""]
        else:
            default = "required" if field.is_required() else repr(field.default)
            lines += [f"- `{name}` ({getattr(annotation, '__name__', annotation)}; default {default})"]
    return lines + [""]


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
