"""MT-Bench: 80 two-turn questions, single-answer grading or pairwise."""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_evaluators(register):
    register(
        "mtbench",
        "tapir_mtbench.runner:MTBench",
        description="MT-Bench: 80 two-turn questions in 8 categories, judge-graded 1-10 (or pairwise vs a baseline)",
    )
