"""The exception types that reach the user as a clean message."""


class TapirError(Exception):
    """A problem the user can fix: what went wrong, where, and how to fix it.

    The CLI prints the message (no traceback) and exits with ``exit_code``.
    """

    exit_code = 1


class ConfigError(TapirError):
    """The config, a data file or the command line is wrong; found before
    anything is written or called (exit code 2)."""

    exit_code = 2
