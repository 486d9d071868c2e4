"""export: the distilled dataset of the last round (JSONL and a datasets
folder), the MFD plot, and ``checkpoints/round-N`` links to this run's
checkpoints (which live in the database's ``<db name>-stages/`` folder:
tapir/pipeline/stagedirs.py). It runs for every run (its key includes the
run id): the files in ``output_dir`` are this run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tapir import progress
from tapir.pipeline.job import Job
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
        ctx = job.ctx
        last = max(r for (name, r) in job.engine.by_node if name == "train")
        # The training set is freed once written, and the items read for it before the Arrow part.
        write_dataset(job, training_rows(job, last), on_written=lambda: _let_go_of_items(ctx))
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


ROWS_PER_CHUNK = 4096  # rows turned into Arrow columns at a time


def _let_go_of_items(ctx) -> None:
    """The context's items (every scope the training set read: 110K+ at 52K)
    freed and the heap given back, so the Arrow part (pyarrow allocates from
    its own pool) does not add to them."""
    from tapir import heap

    ctx.forget_items()
    heap.trim()


def write_dataset(job: Job, rows: Iterable[dict], on_written: Callable[[], None] | None = None) -> None:
    """``dataset.jsonl`` and the ``dataset`` folder (``datasets``' save_to_disk)
    from ``rows``, streamed: each row is written as it comes (``rows`` may be
    a generator holding the training set: it is freed once the JSONL is
    written), then the JSONL is read back into Arrow columns a chunk at a
    time, so no list of every row as a dict is built, and the training set
    and ``datasets`` (about 86 MB once imported) are never held together.
    The files are those of writing the whole list at once. ``on_written``
    runs once the JSONL is written (``rows`` exhausted), before the Arrow part.
    """
    out = job.ctx.out_dir / "dataset.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    job.info["jsonl"] = str(out)
    job.info["rows"] = n
    if on_written is not None:
        on_written()
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is part of the local extra
        return
    folder = job.ctx.out_dir / "dataset"
    datasets.Dataset.from_dict(jsonl_columns(out)).save_to_disk(str(folder))
    job.info["datasets_folder"] = str(folder)


def jsonl_columns(path: Path) -> dict[str, Any]:
    """The rows of a JSONL file as one Arrow array per column (:class:`ArrowColumns`),
    read ``ROWS_PER_CHUNK`` lines at a time. JSON gives back the values written
    (str, int, float, None), so the columns are those of the rows themselves."""
    columns = ArrowColumns()
    with path.open(encoding="utf-8") as f:
        for chunk in chunked((json.loads(line) for line in f), ROWS_PER_CHUNK):
            columns.add(chunk)
    return columns.arrays()


def chunked(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ArrowColumns:
    """Rows (dicts) gathered into one Arrow array per column, a chunk at a
    time; the columns are those of the first row and their types the ones
    ``datasets.Dataset.from_list`` infers from the whole list (a chunk whose
    values are all None takes the column's type)."""

    def __init__(self) -> None:
        self.names: list[str] | None = None
        self.chunks: dict[str, list[Any]] = {}

    def add(self, rows: Sequence[dict]) -> None:
        import pyarrow as pa

        if self.names is None:
            self.names = list(rows[0])
            self.chunks = {name: [] for name in self.names}
        for name in self.names:
            self.chunks[name].append(pa.array([row.get(name) for row in rows]))

    def arrays(self) -> dict[str, Any]:
        import pyarrow as pa

        out = {}
        for name in self.names or []:
            parts = self.chunks[name]
            types = {a.type for a in parts if a.type != pa.null()}
            if len(types) > 1:  # e.g. ints in one chunk, floats in another: infer over the whole column
                parts = [pa.array([v for a in parts for v in a.to_pylist()])]
            elif types:
                (kind,) = types
                parts = [a if a.type == kind else pa.nulls(len(a), type=kind) for a in parts]
            out[name] = pa.chunked_array(parts, type=parts[0].type if parts else None)
        return out


def training_rows(job: Job, round: int) -> Iterator[dict]:
    """The dataset rows of round ``round``'s training set. A generator: the
    training set (items, teacher answers, examples) lives while the rows are
    written, and is freed once they are (the model cards read the counts the
    train stages recorded, not the sets)."""
    from tapir.pipeline.stages.train import training_set, weighted_examples

    hard, easy, alpha = training_set(job, round)
    examples = weighted_examples(hard, easy, alpha, job.ctx.config.curriculum.weighting)
    yield from dataset_rows(examples, hard + easy)


def dataset_rows(examples, items) -> Iterator[dict]:
    for ex, it in zip(examples, items):
        yield {
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
