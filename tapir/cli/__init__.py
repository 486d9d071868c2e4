"""The ``tapir`` command line. One module per command family; plugins add
commands through the ``register_commands`` hook."""

from __future__ import annotations

import click

from tapir import __version__
from tapir.errors import TapirError


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class TapirGroup(click.Group):
    """Turns a :class:`TapirError` into one clean message and its exit code
    (2: config / input mistakes found before anything ran; 1: work failed)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TapirError as exc:
            raise _Failure(str(exc), exc.exit_code) from None


@click.group(cls=TapirGroup)
@click.version_option(__version__, prog_name="tapir")
@click.option(
    "--db",
    "db_path",
    envvar="TAPIR_DB",
    default=None,
    help="SQLite database (default ./tapir.db; env TAPIR_DB).",
)
@click.pass_context
def cli(ctx, db_path):
    """tapir: distil instruction following from a teacher LLM into small
    students (TAPIR), and evaluate them."""
    ctx.obj = {"db": db_path}


def _add_commands() -> None:
    from tapir.cli import bench_cmd, distill_cmd, plugins_cmd, prompt_cmd, runs_cmd

    for module in (plugins_cmd, prompt_cmd, runs_cmd, distill_cmd, bench_cmd):
        module.register(cli)
    from tapir.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)


def main(argv=None):
    try:
        _add_commands()
    except TapirError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    cli.main(args=argv, prog_name="tapir")

