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


# Global options a user may put before or after the subcommand
# (``tapir --db X runs`` and ``tapir runs --db X`` mean the same).
_ANYWHERE_VALUE = ("--db",)
_ANYWHERE_FLAG = ("--debug",)


def hoist_global_options(args: list[str]) -> list[str]:
    """Move ``--db X`` / ``--db=X`` / ``--debug`` found after the subcommand
    to the front, where the group parses them (nothing after ``--`` moves)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _ANYWHERE_FLAG:
            front.append(arg)
        elif arg in _ANYWHERE_VALUE and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _ANYWHERE_VALUE:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _debug(ctx) -> bool:
    import os

    root = ctx.find_root()
    if isinstance(root.obj, dict) and root.obj.get("debug"):
        return True
    return os.environ.get("TAPIR_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def explain(exc: BaseException) -> str:
    """One line for an unexpected error, plus the fix where we know it."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if "offline" in text.lower() or type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        line += ("\nThe model or data set is not in the local Hugging Face cache and the hub cannot be "
                 "reached (HF_HUB_OFFLINE is set, or no network): download it once with network "
                 "(`hf download ID`), or give a local folder.")
    return line


class TapirGroup(click.Group):
    """Turns a :class:`TapirError` into one clean message and its exit code
    (2: config / input mistakes found before anything ran; 1: work failed).
    Any other exception becomes one line (``Error: Type: message``) and a
    pointer to ``--debug``, which shows the traceback instead."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TapirError as exc:
            if _debug(ctx):
                raise
            raise _Failure(str(exc), exc.exit_code) from None
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are shown
            if _debug(ctx):
                raise
            raise _Failure(f"{explain(exc)}\n(run with --debug for the traceback)", 1) from None


@click.group(cls=TapirGroup)
@click.version_option(__version__, prog_name="tapir")
@click.option(
    "--db",
    "db_path",
    envvar="TAPIR_DB",
    default=None,
    help="SQLite database (default ./tapir.db; env TAPIR_DB). Before or after the subcommand.",
)
@click.option("-v", "--verbose", is_flag=True, envvar="TAPIR_VERBOSE",
              help="Show other libraries' progress bars, logs and warnings (env TAPIR_VERBOSE=1).")
@click.option("--debug", is_flag=True, envvar="TAPIR_DEBUG",
              help="Show the traceback of an unexpected error (env TAPIR_DEBUG=1). Before or after the subcommand.")
@click.pass_context
def cli(ctx, db_path, verbose, debug):
    """tapir: distil instruction following from a teacher LLM into small
    students (TAPIR), and evaluate them."""
    from tapir.progress import quiet_libraries

    quiet_libraries(verbose=verbose or None)
    ctx.obj = {"db": db_path, "debug": debug, "verbose": verbose}


def _add_commands() -> None:
    from tapir.cli import (bench_cmd, distill_cmd, logs_cmd, plugins_cmd, prompt_cmd, report_cmd, runs_cmd,
                           study_cmd)

    for module in (plugins_cmd, prompt_cmd, runs_cmd, logs_cmd, distill_cmd, bench_cmd, report_cmd, study_cmd):
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

