"""Open LLM Leaderboard tasks (and any lm-eval task) through lm-eval's Python API.

``tapir bench run lmeval --model M -o preset=leaderboard-v1`` runs the v1
leaderboard settings; ``-o tasks=[arc_easy,path/to/task.yaml]`` runs any
lm-eval task or local task YAML. See :mod:`tapir_lmeval.runner`.
"""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_evaluators(register):
    register(
        "lmeval",
        "tapir_lmeval.runner:LMEval",
        description="lm-eval tasks: presets leaderboard-v1 (ARC 25, HellaSwag 10, MMLU 5, TruthfulQA mc2 0, "
        "Winogrande 5, GSM8K 5) and leaderboard (v2), any lm-eval task name or local task YAML",
        requires=("lm_eval",),
        extra="bench",
    )
