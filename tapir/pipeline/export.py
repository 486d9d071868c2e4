"""Exports: the distilled dataset (JSONL and a datasets folder), a model card
per checkpoint, the MFD plot and a short report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tapir.pipeline.context import Context
from tapir.roles import TrainExample


def write_dataset(ctx: Context, rows: Sequence[dict], info: dict) -> None:
    out = ctx.out_dir / "dataset.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    info["jsonl"] = str(out)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is part of the local extra
        return
    folder = ctx.out_dir / "dataset"
    datasets.Dataset.from_list(list(rows)).save_to_disk(str(folder))
    info["datasets_folder"] = str(folder)


def dataset_rows(examples: Sequence[TrainExample], items) -> list[dict]:
    rows = []
    for ex, it in zip(examples, items):
        rows.append(
            {
                "id": it.id,
                "instruction": it.instruction,
                "input": it.input,
                "output": ex.response,
                "task_type": it.task_type,
                "origin": it.meta.get("origin"),
                "round": it.meta.get("round"),
                "weight": round(ex.weight, 6),
            }
        )
    return rows


MODEL_CARD = """---
base_model: {base}
tags: [tapir, distillation, instruction-tuning]
---
# {name} (round {round})

Distilled with [tapir](https://pypi.org/project/tapir/) (TAPIR: Task-Aware
Curriculum Planning for Instruction Refinement).

| | |
|---|---|
| base model | {base} |
| teacher | {teacher} |
| judge (MFD) | {judge} |
| rewriter | {rewriter} |
| round | {round} of {rounds} |
| training examples this round | {examples} |
| hard / easy weight share (alpha) | {alpha} |
| seed set D_S | {hard} of {total} instructions ({rule}) |
| trainer | {trainer} {trainer_options} |

Load it with `AutoModelForCausalLM.from_pretrained("{path}")`.
"""


def model_card(ctx: Context, path: str, round: int, examples: int, alpha: float | None, seed_info: dict) -> None:
    cfg = ctx.config
    text = MODEL_CARD.format(
        name=cfg.name,
        base=cfg.student.model,
        teacher=cfg.teacher.model.model if cfg.teacher.model else "dataset answers",
        judge=f"{cfg.judge.name}" + (f" ({cfg.judge.model.model})" if cfg.judge.model else ""),
        rewriter=(cfg.rewriter.name + (f" ({cfg.rewriter.model.model})" if cfg.rewriter.model else ""))
        if cfg.rewriter
        else "none",
        round=round,
        rounds=cfg.curriculum.rounds,
        examples=examples,
        alpha="n/a (S0: all data, weight 1)" if alpha is None else f"{alpha:.2f} / {1 - alpha:.2f}",
        hard=seed_info.get("hard", "?"),
        total=seed_info.get("hard", 0) + seed_info.get("easy", 0),
        rule=seed_info.get("rule", "?"),
        trainer=cfg.trainer.name,
        trainer_options=json.dumps(cfg.trainer.options, sort_keys=True),
        path=path,
    )
    (Path(path) / "README.md").write_text(text, encoding="utf-8")


def plot_mfd(ctx: Context, rounds: Sequence[int], cut: tuple[float, str] | None = None) -> str | None:
    """Histogram of MFD per round (how the distribution moves), with the
    seed cut (threshold, rule) marked, as a PNG."""
    series = {r: list(ctx.scores("mfd", r).values()) for r in rounds}
    series = {r: v for r, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r, values in series.items():
        ax.hist(values, bins=20, alpha=0.5, label=f"student S{r} (n={len(values)})")
    if cut is not None:
        threshold, rule = cut
        ax.axvline(threshold, color="k", linestyle="--", label=f"seed cut: {rule} ({threshold:.2f})")
    ax.set_xlabel("MFD = score(teacher) - score(student)")
    ax.set_ylabel("instructions")
    ax.set_title(f"Model Fitting Difficulty: {ctx.config.name}")
    ax.legend()
    out = ctx.out_dir / "mfd.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return str(out)
