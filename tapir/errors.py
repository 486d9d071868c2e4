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


# Failures of an API call that no retry fixes (``permanent`` ones, see
# docs/pipeline.md): what each cause is, and what the user does about it.
PERMANENT_CAUSES = {
    "quota": ("the provider says the account is out of quota or credit",
              "add credit or raise the quota (the provider's billing page), then re-run"),
    "auth": ("the provider refused the API key",
             "check the key (the variable the model's options.api_key_env names, or the provider's own, e.g. "
             "OPENAI_API_KEY): it may be revoked, mistyped or for another provider"),
    "forbidden": ("the key is not allowed to use this model",
                  "check the key's project / organisation permissions for the model, or use a key that has them"),
    "model_not_found": ("the server has no such model (or route)",
                        "check the model name and api_base (a server lists its models at <api_base>/models)"),
    "budget": ("the run's spend would pass its budget",
               "raise budget.max_cost_usd (or the role's budget.per_role) in the config if the spend is meant, "
               "then run the same command again: it resumes the same run, and calls already paid are not paid "
               "again"),
    "context_length": ("a request is longer than the model's context",
                       "shorten the prompts, lower max_new_tokens, or raise the model's max_length / use a "
                       "longer-context model"),
}


def permanent_cause(cause: str | None) -> tuple[str, str]:
    """(what happened, how to fix it) for a permanent failure's cause."""
    return PERMANENT_CAUSES.get(cause or "", ("the provider rejected every request the same way",
                                              "read the error below and fix its cause"))


class PermanentFailure(TapirError):
    """An API call failed in a way no retry fixes and every other call would
    share (out of quota, key refused, no such model, context too long).

    A backend raises it from ``generate`` once the answers already in flight
    are delivered, and sends nothing more; the pipeline names the stage.
    ``cause`` is a key of :data:`PERMANENT_CAUSES`."""

    exit_code = 1

    def __init__(self, message: str, cause: str | None = None, status: int | None = None, error: str = ""):
        super().__init__(message)
        self.cause = cause
        self.status = status
        self.error = error


def permanent_failure(model: str, cause: str | None, status: int | None, error: str) -> PermanentFailure:
    """The exception for a permanent failure of a call to ``model``: what, the error, the fix."""
    what, fix = permanent_cause(cause)
    code = f", HTTP {status}" if status else ""
    return PermanentFailure(f"{model}: {what} ({cause or 'permanent'}{code}); no retry fixes this, so nothing more "
                            f"was sent.\n  {error}\nFix: {fix}.", cause, status, error)
