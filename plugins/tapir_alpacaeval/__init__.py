"""AlpacaEval 2.0: win rate against reference outputs, and the LC win rate."""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_evaluators(register):
    register(
        "alpacaeval",
        "tapir_alpacaeval.runner:AlpacaEval",
        description="AlpacaEval 2.0: preference win rate against reference outputs (logprob-weighted), and LC win rate",
    )
