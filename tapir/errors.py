"""The one exception type that reaches the user as a clean message."""


class TapirError(Exception):
    """A problem the user can fix: what went wrong, where, and how to fix it.

    The CLI prints the message (no traceback) and exits non-zero.
    """


class ConfigError(TapirError):
    """The config file is wrong; raised before anything is written."""
