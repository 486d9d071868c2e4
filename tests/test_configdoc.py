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
