"""docs/config.md is generated from the declared schemas and must be current."""

from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    from tapir.configdoc import render

    assert (ROOT / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run `python -m tapir.configdoc > docs/config.md`")


def test_config_reference_lists_every_builtin_component_option():
    from tapir.configdoc import render
    from tapir.plugins import registry

    text = render()
    for role in ("teachers", "judges", "classifiers", "rewriters", "trainers"):
        for comp in registry().by_role[role].values():
            for field in comp.options_model().model_fields:
                assert f"| `{field}` |" in text, (comp.name, field)


def test_plugins_name_shows_declared_options():
    from tapir.cli import _add_commands, cli

    _add_commands()
    result = CliRunner().invoke(cli, ["plugins", "pairwise"])
    assert result.exit_code == 0, result.output
    assert "both_orders" in result.output and "judge pairwise (judges)" in result.output
    result = CliRunner().invoke(cli, ["plugins", "nosuch"])
    assert result.exit_code == 1 and "no component or plugin named 'nosuch'" in result.output


def _literal_fields(model, prefix=""):
    """(dotted key, allowed values) of every Literal key of ``model``, nested sections included."""
    import typing

    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = [annotation, *typing.get_args(annotation)]
        for a in args:
            if typing.get_origin(a) is typing.Literal:
                out.append((prefix + name, typing.get_args(a)))
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                suffix = "[]" if typing.get_origin(annotation) is list else ""
                out += _literal_fields(a, f"{prefix}{name}{suffix}.")
    return out


def test_every_pipeline_key_has_a_meaning_its_allowed_values_and_its_default():
    from tapir.config import PipelineConfig
    from tapir.configdoc import pipeline_keys, render

    rows = {r["name"]: r for r in pipeline_keys()}
    assert len(rows) >= 59
    assert [name for name, r in rows.items() if not r["doc"].strip()] == []
    assert [name for name, r in rows.items() if not r["default"]] == []
    literals = _literal_fields(PipelineConfig)
    assert len(literals) >= 10
    for key, values in literals:
        assert all(repr(v) in rows[key]["type"] for v in values), (key, rows[key]["type"])
    # ranges from ge / gt / le / lt, and nested defaults from their section's own default
    assert rows["curriculum.alpha"]["type"] == "float >= 0.0, <= 1.0"
    assert rows["mfd.top_fraction"]["type"] == "float > 0.0, <= 1.0 or null"
    assert rows["curriculum.expand_per_round"]["type"] == "list of (int >= 0), at least 1 entry"
    assert rows["data.on_bad_row"]["type"] == "one of 'skip', 'error'"
    assert rows["expansion.generation.temperature"]["default"] == "0.7"  # not Generation's 0.0
    assert rows["student.generation.temperature"]["default"] == "0.0"
    assert rows["evaluation.benchmarks[].rounds"]["type"] == "one of 'all', 'last'"
    text = render()
    assert ("| `sampling` | one of 'task', 'task-draw', 'natural' | `'task'` | Eq. 3 in each round's training set"
            in text)


def test_every_builtin_component_option_has_a_meaning():
    from tapir.configdoc import key_rows
    from tapir.plugins import registry

    empty = []
    for role in ("backends", "teachers", "judges", "classifiers", "rewriters", "trainers", "evaluators"):
        for comp in registry().by_role[role].values():
            try:
                model = comp.options_model()
            except ImportError:
                continue
            empty += [(comp.name, r["name"]) for r in key_rows(model) if not r["doc"].strip()]
    assert empty == []


def test_plugins_name_lists_allowed_values_and_ranges():
    from tapir.cli import _add_commands, cli

    _add_commands()
    out = CliRunner().invoke(cli, ["plugins", "pairwise"]).output
    assert "one of 'table8', 'tapir'" in out and "int >= 1, <= 20" in out
    line = next(l for l in out.splitlines() if l.strip().startswith("top_logprobs"))
    assert line.split() == ["top_logprobs", "int", ">=", "1,", "<=", "20", "default", "20", "alternatives", "per",
                            "token", "asked", "for", "with", "use_logprobs"]
    out = CliRunner().invoke(cli, ["plugins", "hf"]).output
    assert "lora.r" in out  # a nested section's keys, dotted, as in docs/config.md
