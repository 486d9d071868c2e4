"""export: the distilled dataset of the last round (JSONL and a datasets
folder), the MFD plot, and ``checkpoints/round-N`` links to this run's
checkpoints (which live in the database's ``<db name>-stages/`` folder:
tapir/pipeline/stagedirs.py). It runs for every run (its key includes the
run id): the files in ``output_dir`` are this run's."""

from __future__ import annotations

import json
from typing import Sequence

from tapir import progress
from tapir.pipeline.engine import Job
from tapir.pipeline.stagedirs import link_checkpoints


class Export:
    name = "export"
    # Its key holds the run id (the whole config) anyway; what the model cards and the dataset read.
    reads = ("output_dir", "name", "seed", "data", "teacher", "student", "judge", "rewriter", "trainer",
             "curriculum", "resample", "export")

    @staticmethod
    def upstream(step):
        # Every node: the dataset card sums every stage's calls and cost.
        return (("ingest", 0), ("seed_cut", None), ("classify", 0), ("train", None), ("judge", None),
                ("student_answers", None), ("resample", None), ("heldout_answers", 0),
                ("expand", None), ("rewrite", None), ("teacher_answers", None), ("evaluate_base", 0),
                ("evaluate", None), ("benchmarks_base", 0), ("benchmarks", None))
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        from tapir.pipeline.stages.train import training_set, weighted_examples

        ctx = job.ctx
        cfg = ctx.config
        last = max(r for (name, r) in job.engine.by_node if name == "train")
        hard, easy, alpha = training_set(job, last)
        examples = weighted_examples(hard, easy, alpha, cfg.curriculum.weighting)
        write_dataset(job, dataset_rows(examples, hard + easy))
        paths = {r: job.upstream_info("train", r).get("path") for (name, r) in sorted(job.engine.by_node)
                 if name == "train"}
        links, missing = link_checkpoints(ctx.out_dir, {r: p for r, p in paths.items() if p})
        job.info["checkpoints"] = links
        for line in missing:
            progress.say(f"   warning: {line}")
        if missing:
            job.info["missing_checkpoints"] = missing
        from tapir.pipeline.modelcard import export_cards

        export_cards(job)  # every round's card with its benchmark results; export.push_to_hub
        from tapir.pipeline.hubdataset import push_dataset

        dataset = push_dataset(job)  # the per-round training sets with a dataset card
        if dataset:
            job.info["pushed_dataset"] = dataset
        rounds = sorted(r for (name, r) in job.engine.by_node if name == "judge")
        cut = job.upstream_info("seed_cut")
        plot = plot_mfd(job, rounds, (cut["threshold"], cut["rule"]) if "threshold" in cut else None)
        if plot:
            job.info["mfd_plot"] = plot


def write_dataset(job: Job, rows: Sequence[dict]) -> None:
    out = job.ctx.out_dir / "dataset.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    job.info["jsonl"] = str(out)
    job.info["rows"] = len(rows)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is part of the local extra
        return
    folder = job.ctx.out_dir / "dataset"
    datasets.Dataset.from_list(list(rows)).save_to_disk(str(folder))
    job.info["datasets_folder"] = str(folder)


def dataset_rows(examples, items) -> list[dict]:
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
                "refined_instruction": it.meta.get("refined_instruction"),
                "weight": round(ex.weight, 6),
            }
        )
    return rows


def plot_mfd(job: Job, rounds: Sequence[int], cut: tuple[float, str] | None = None) -> str | None:
    """Histogram of MFD per round (how the distribution moves), with the
    seed cut (threshold, rule) marked, as a PNG."""
    series = {r: list(job.ctx.scores(job.scope("judge", r), "mfd").values()) for r in rounds}
    series = {r: v for r, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r, values in series.items():
        ax.hist(values, bins=20, alpha=0.5, label=f"student S{r} (n={len(values)})")
    if cut is not None and cut[0] != float("-inf"):
        threshold, rule = cut
        ax.axvline(threshold, color="k", linestyle="--", label=f"seed cut: {rule} ({threshold:.2f})")
    ax.set_xlabel("MFD = score(teacher) - score(student)")
    ax.set_ylabel("instructions")
    ax.set_title(f"Model Fitting Difficulty: {job.config.name}")
    ax.legend()
    out = job.ctx.out_dir / "mfd.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return str(out)
