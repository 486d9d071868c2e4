"""Named sets of lm-eval tasks with their few-shot counts and headline metrics.

A preset is a list of :class:`PresetTask`: the lm-eval task or group name,
the number of few-shot examples (``None`` keeps the task's own default) and
the metrics the leaderboard reports for it (marked ``primary`` in the stored
rows, which is what ``tapir compare`` shows by default; an empty tuple marks
none of the row's metrics).

Metric keys follow lm-eval's results dict with the ``,none`` filter
suffix dropped: ``acc``, ``acc_norm``, ``exact_match,strict-match``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PresetTask:
    task: str
    num_fewshot: int | None
    primary: tuple[str, ...]


PRESETS: dict[str, tuple[PresetTask, ...]] = {
    # The Open LLM Leaderboard v1 settings (what the TAPIR paper reports).
    "leaderboard-v1": (
        PresetTask("arc_challenge", 25, ("acc_norm",)),
        PresetTask("hellaswag", 10, ("acc_norm",)),
        PresetTask("mmlu", 5, ("acc",)),
        PresetTask("truthfulqa_mc2", 0, ("acc",)),
        PresetTask("winogrande", 5, ("acc",)),
        PresetTask("gsm8k", 5, ("exact_match,strict-match",)),
    ),
    # The paper's four (v1 without Winogrande and GSM8K).
    "leaderboard-v1-core": (
        PresetTask("arc_challenge", 25, ("acc_norm",)),
        PresetTask("hellaswag", 10, ("acc_norm",)),
        PresetTask("mmlu", 5, ("acc",)),
        PresetTask("truthfulqa_mc2", 0, ("acc",)),
    ),
    # lm-eval's v2 ``leaderboard`` group; few-shot counts come from its task YAMLs.
    "leaderboard": (
        PresetTask("leaderboard", None, ()),  # headlines are its sub-groups, below
    ),
}

# Headline metrics of the v2 leaderboard's sub-groups (the group row itself
# averages unlike metrics, so it is not a headline).
V2_PRIMARY: dict[str, tuple[str, ...]] = {
    "leaderboard_mmlu_pro": ("acc",),
    "leaderboard_bbh": ("acc_norm",),
    "leaderboard_gpqa": ("acc_norm",),
    "leaderboard_math_hard": ("exact_match",),
    "leaderboard_ifeval": ("prompt_level_strict_acc", "inst_level_strict_acc"),
    "leaderboard_musr": ("acc_norm",),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def primary_metrics(preset: str | None) -> dict[str, tuple[str, ...]]:
    """task -> headline metric keys for a preset ({} for none)."""
    if not preset:
        return {}
    out = {t.task: t.primary for t in PRESETS[preset]}
    if preset == "leaderboard":
        out.update(V2_PRIMARY)
    return out
