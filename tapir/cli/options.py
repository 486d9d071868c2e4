"""Options shared by the commands that take them: ``-o KEY=VALUE`` and ``--set KEY=VALUE``."""

from __future__ import annotations

from typing import Any

import click

from tapir.errors import TapirError


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (``5``, ``true``,
    ``[a, b]``, ``{r: 8}``), and kept as text when they are not YAML."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TapirError(f"option '{pair}' is not KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except (yaml.YAMLError, RecursionError):  # not YAML (or nested past the parser): kept as text
            parsed = value
        options[key.strip()] = parsed
    return options

SET_OPTION = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Override a config key (repeatable; checked like the file): dotted keys, list indices, YAML values, "
         "e.g. --set mfd.delta=1.5 --set curriculum.expand_per_round.0=5 --set trainer.options.lora=null.")
