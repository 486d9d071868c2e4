"""What the curriculum did, in lines a person reads: the seed cut (selected,
ties at the cut value, exclusions for MFD <= 0) and each round's training
set (examples, coverage of D_P). From the stages' info only; shared by
`tapir distill`'s summary, `tapir runs show` and the report."""

from __future__ import annotations

from typing import Any, Iterable


def coverage_text(info: dict[str, Any]) -> str:
    """One round's training set: examples and the coverage of D_P."""
    cov = info.get("coverage") or {}
    text = (f"{info.get('examples', '?')} examples ({info.get('hard_examples', '?')} hard, "
            f"{info.get('easy_examples', '?')} easy")
    if info.get("zero_weight_left_out"):
        text += f", {info['zero_weight_left_out']} left out at weight 0"
    text += ")"
    if info.get("steps") is not None:
        text += f", {info['steps']} steps"
    if cov:
        text += (f"; D_P coverage {cov.get('used', '?')}/{cov.get('available', '?')} unique pairs "
                 f"({100 * cov.get('fraction', 0.0):.1f}%)")
        if cov.get("seeds_available"):
            text += f", seeds {cov.get('seeds_used', '?')}/{cov['seeds_available']}"
        if info.get("sampling"):
            text += f", sampling {info['sampling']}"
    return text


def curriculum_lines(stages: Iterable[tuple[str, int, dict[str, Any]]]) -> list[str]:
    """``(stage name, round, info)`` -> lines: each seed cut, then each
    curriculum round's training set."""
    from tapir.pipeline.mfd import describe_cut

    lines = []
    stages = list(stages)
    for name, r, info in sorted(stages, key=lambda s: (s[1], s[0])):
        if name == "seed_cut" and info.get("hard") is not None:
            lines.append(f"seed cut{f' (S{r})' if r else ''}: {describe_cut(info)}")
    for name, r, info in sorted(stages, key=lambda s: s[1]):
        if name == "train" and r > 0 and info.get("examples") is not None:
            lines.append(f"round {r} training set: {coverage_text(info)}")
    return lines
