"""Benchmark scores per round (Fig. 3): the rows of ``benchmark_results``
whose model is a checkpoint of the run, through :func:`tapir.compare.build`."""

from __future__ import annotations

from typing import Any, Iterable

from tapir.errors import TapirError
from tapir.report.figures import NO_MATPLOTLIB, _matplotlib, _png, _short
from tapir.report.pieces import Figure, Section, Table
from tapir.store.benchmarks import models_with_results
from tapir.store.db import Store


# Benchmarks whose score falls as the model gets better (the pipeline's held-out loss).
LOWER_IS_BETTER = frozenset({"heldout-loss"})


def checkpoints_of(stages: list[dict[str, Any]]) -> dict[int, str]:
    """round -> checkpoint path of this run's train stages."""
    return {s["round"]: s["info"]["path"] for s in stages
            if s["name"] == "train" and s["status"] == "done" and s["info"].get("path")}


def _benchmark_entries(store: Store, paths: Iterable[str]):
    """compare.build over the checkpoints that have results (None: none has)."""
    from tapir.bench import model_key
    from tapir.compare import build

    keys = list(dict.fromkeys(model_key(p) for p in paths))
    if not keys:
        return None
    have = models_with_results(store, keys)
    if not have:
        return None
    return build(store, [k for k in keys if k in have])


def _series_label(entry) -> str:
    from tapir.compare import MISSING, settings_text

    subset = "full" if entry.subset is None else ("?" if entry.subset == MISSING else str(entry.subset))
    judge = "" if entry.judge in (None, MISSING) else f", judge {entry.judge}"
    template = "" if entry.template in (None, MISSING) else f", template {entry.template}"
    return f"{settings_text(entry.options)}; {subset}{judge}{template}"


def benchmark_rounds(store: Store, stages: list[dict[str, Any]], max_panels: int = 9) -> Section:
    """Fig. 3: benchmark scores of S0..S_N (and the base model when it has results)."""
    section = Section("bench", "Benchmark scores per round (Fig. 3)",
                      intro="Results of `tapir bench` on this run's checkpoints (benchmark_results whose model "
                            "is a train stage's checkpoint path), one line per benchmark column and benchmark "
                            "settings. Section 4.2: MT-Bench, AlpacaEval 2.0, Open LLM Leaderboard.")
    ckpts = checkpoints_of(stages)
    if not ckpts:
        section.notes.append("no checkpoint in this run yet: no benchmark scores to show")
        return section
    try:
        table = _benchmark_entries(store, ckpts.values())
    except TapirError as exc:
        section.notes.append(f"benchmark results could not be read: {exc}")
        return section
    if table is None:
        section.notes.append("no benchmark results for this run's checkpoints: run e.g. `tapir bench mtbench "
                             "CHECKPOINT` on " + ", ".join(f"S{r}" for r in sorted(ckpts)) + " (paths in the "
                             "training table above), then write the report again")
        return section
    rows = []
    panels: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for sec in table.sections:
        for e in sec.entries:
            if e.run_id is None:
                continue
            x = "base" if e.is_base else f"S{e.round}"
            label = _series_label(e)
            for col in sec.columns:
                value = e.scores.get(col)
                rows.append([sec.benchmark, col, x, "" if value is None else f"{value:.4g}", e.n or "",
                             e.failures, e.status, label, e.run_id])
                if value is not None:
                    panels.setdefault((sec.benchmark, col), {}).setdefault(label, {})[x] = value
    xs = (["base"] if any(r[2] == "base" for r in rows) else []) + [f"S{r}" for r in sorted(ckpts)]
    mpl = _matplotlib()
    keys = list(panels)[:max_panels]
    figure = Figure("Benchmarks per round", "Score of each student after each round (S0 is trained on all of "
                                            "D; S_r after curriculum round r)")
    if len(panels) > max_panels:
        section.notes.append(f"{len(panels)} benchmark columns: the first {max_panels} are plotted, all are in "
                             f"the table")
    if mpl is None:
        figure.note = NO_MATPLOTLIB
    elif keys:
        ncols = min(3, len(keys))
        nrows = (len(keys) + ncols - 1) // ncols
        fig = mpl(figsize=(4.2 * ncols, 3.1 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, key in zip(axes.flat, keys):
            for k, (label, points) in enumerate(panels[key].items()):
                px = [x for x in xs if x in points]
                ax.plot([xs.index(x) for x in px], [points[x] for x in px], marker="o", color=f"C{k}",
                        label=_short(label, 40))
            ax.set_xticks(range(len(xs)), xs)
            better = " (lower is better)" if key[0] in LOWER_IS_BETTER else ""
            ax.set_title(_short(f"{key[0]}: {key[1]}", 50) + better, fontsize=9)
            ax.grid(alpha=0.3)
            if len(panels[key]) > 1:
                ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        figure.png = _png(fig)
    else:
        figure.note = "no numeric benchmark values to plot"
    section.figures.append(figure)
    section.tables.append(Table("Benchmark results of this run's checkpoints",
                                ["benchmark", "column", "model", "value", "n", "failures", "status", "settings",
                                 "bench run"], rows))
    return section
