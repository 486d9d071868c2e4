"""``tapir report RUN``: one self-contained HTML file with the paper's
figures for a run, read from the store.

What it shows (each figure is an inline base64 PNG, every number is also in
a table; the page loads nothing from anywhere):

- the run: config summary, and per round the training set (hard / easy
  examples, alpha_r, the hard examples' share of the weight, final loss);
- **task distribution before and after re-sampling** (the paper's Fig. 5):
  per task type the share in D (classified), in the hard seed D_S, and in
  the draws of each ``resample`` round (its info ``per_task``), with the
  target share of the task weights;
- **MFD distribution per round with the seed cut** (Fig. 6): the ``mfd``
  scores of each ``judge`` stage (round 0 is S0; later rounds exist with
  ``curriculum.recompute_mfd``), the cut's threshold and rule from the
  ``seed_cut`` stage;
- **benchmark scores per round** (Fig. 3): rows of ``benchmark_results``
  whose model is a checkpoint of this run (the ``train`` stages' ``path``),
  through :func:`tapir.compare.build`, one line per benchmark column and
  benchmark settings; a note when there are none;
- **the ablation table** (Table 5) when the run belongs to one: see
  :func:`ablation_runs` and :func:`ablation_table`;
- per stage: status, items ok / failed, calls, tokens, cost, answers cut at
  ``max_new_tokens``, seconds; failed items by kind; LLM calls by role.

Read-only: :func:`open_readonly` never creates or migrates a database.
matplotlib is imported only when a figure is drawn; without it the page
still has every table, and says why the figures are missing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tapir.errors import TapirError
from tapir.store.db import Store, utcnow
from tapir.store.stages import run_stages
from tapir.tasks import TASK_TYPES

ABLATION_TAG = "/ablation:"
ABLATION_FILE = "ablation.json"
# Benchmarks whose score falls as the model gets better (the pipeline's held-out loss).
LOWER_IS_BETTER = frozenset({"heldout-loss"})


# --------------------------------------------------------------------------- pieces of a page


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str | None = None
    css: str = ""


@dataclass
class Figure:
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None  # why there is no image


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    run: dict[str, Any]
    sections: list[Section]
    generated_at: str

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    @property
    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]


# --------------------------------------------------------------------------- store access


def open_readonly(path: str | Path | None = None) -> Store:
    """The database at ``path`` (see :func:`tapir.store.db.resolve_db_path`),
    opened read-only: a missing file is an error, never a new database, and
    no migration runs."""
    from tapir.store import open_store

    return open_store(path, readonly=True)


def find_run(store: Store, ref: str) -> dict[str, Any]:
    """A run by id, unique id prefix or name (the latest run of that name),
    as :func:`tapir.runs.resolve_run` reads them."""
    from tapir.runs import resolve_run

    cols = "id, name, status, config, created_at, updated_at, tapir_version"
    rows = store.execute(f"select {cols} from runs where id = ?", [resolve_run(store, ref)]).fetchall()
    run = dict(zip([c.strip() for c in cols.split(",")], rows[0]))
    try:
        run["config"] = json.loads(run["config"] or "{}")
    except ValueError:
        run["config"] = {}
    return run


def _stages(store: Store, run_id: str) -> list[dict[str, Any]]:
    return run_stages(store, run_id)


def _by_node(stages: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(s["name"], s["round"]): s for s in stages}


def _scores(store: Store, key: str | None, name: str) -> dict[str, float]:
    if not key:
        return {}
    return {i: v for i, v in store.execute(
        "select item_id, value from scores where scope = ? and name = ? and value is not null", [key, name])}


def _labels(store: Store, key: str | None) -> dict[str, str]:
    if not key:
        return {}
    return {i: label for i, label in store.execute(
        "select item_id, label from classifications where scope = ? and label is not null", [key])}


# --------------------------------------------------------------------------- figures


def _matplotlib():
    """The Figure class, or None without matplotlib (no pyplot: no global state)."""
    try:
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return None
    return MplFigure


NO_MATPLOTLIB = "no figure: matplotlib is not installed (pip install 'tapir[local]'); the numbers are in the table"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- sections


def _config_section(run: dict[str, Any], stages: list[dict[str, Any]]) -> Section:
    cfg = run["config"]

    def get(path: str, default: Any = None) -> Any:
        value: Any = cfg
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    def model(role: str) -> str:
        section = get(role)
        if section is None:
            return "none"
        if not isinstance(section, dict):
            return str(section)
        name = section.get("name")
        m = section.get("model")
        model_id = m.get("model") if isinstance(m, dict) else (m if isinstance(m, str) else None)
        return " ".join(str(x) for x in (name, f"({model_id})" if model_id and name else model_id) if x)

    data = get("data") or {}
    rows = [
        ["data", data.get("path") or data.get("hf_dataset") or "?"],
        ["teacher", model("teacher")],
        ["student", model("student")],
        ["judge (MFD)", model("judge")],
        ["classifier", model("classifier")],
        ["rewriter", model("rewriter")],
        ["trainer", model("trainer")],
        ["seed cut", _cut_text(get("mfd") or {})],
        ["rounds", get("curriculum.rounds")],
        ["alpha / step", f"{get('curriculum.alpha')} / {get('curriculum.alpha_step')}"],
        ["weighting", get("curriculum.weighting")],
        ["sampling", get("curriculum.sampling", "-")],
        ["expand per round", get("curriculum.expand_per_round")],
        ["MFD each round (recompute_mfd)", get("curriculum.recompute_mfd")],
        ["task weights", get("resample.weights")],
        ["recipe skip", get("recipe.skip") or []],
    ]
    rows = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in rows]
    train_rows = []
    for s in sorted((s for s in stages if s["name"] == "train"), key=lambda s: s["round"]):
        i = s["info"]
        train_rows.append([f"S{s['round']}", i.get("examples", ""), i.get("hard_examples", ""),
                           i.get("easy_examples", ""), i.get("steps", ""), i.get("train_tokens", ""), _num(i.get("alpha")),
                           _num(i.get("hard_weight_share")), _num(i.get("final_loss")), s["status"],
                           i.get("path", "")])
    section = Section("run", "Run", tables=[Table("Configuration", ["setting", "value"], rows, css="kv")])
    section.tables.append(Table(
        "Training per round (Eq. 4: each hard example weighs alpha_r, each easy one 1 - alpha_r)",
        ["student", "examples", "hard", "easy", "optimizer steps", "tokens trained", "alpha_r", "hard weight share",
         "final loss", "status", "checkpoint"], train_rows,
        note=None if train_rows else "no train stage has run yet"))
    coverage = _coverage_table(stages)
    if coverage is not None:
        section.tables.append(coverage)
    return section


def _coverage_table(stages: list[dict[str, Any]]) -> Table | None:
    """Per curriculum round: how much of D_P its training set used (unique
    pairs used / available, in all, for the MFD-selected seeds and per task)."""
    rows = []
    for s in sorted((s for s in stages if s["name"] == "train" and s["round"] > 0), key=lambda s: s["round"]):
        cov = s["info"].get("coverage")
        if not isinstance(cov, dict):
            continue
        seeds = (f"{cov.get('seeds_used')}/{cov.get('seeds_available')}" if cov.get("seeds_available") is not None
                 else "")
        rows.append([f"S{s['round']}", s["info"].get("sampling", ""), "all types", cov.get("available", ""),
                     cov.get("used", ""), _pct(cov.get("used", 0), cov.get("available", 0)), seeds,
                     cov.get("examples", ""), ""])
        for t, v in (cov.get("per_task") or {}).items():
            rows.append(["", "", t, v.get("available", ""), v.get("used", ""),
                         _pct(v.get("used", 0), v.get("available", 0)), "", v.get("examples", ""),
                         f"{100 * v.get('share', 0):.1f}% / {100 * v.get('target', 0):.1f}%"])
    if not rows:
        return None
    return Table("Coverage of D_P per round (Eq. 3: unique hard pairs trained on / available)",
                 ["student", "sampling", "task type", "pairs in D_P", "used", "coverage", "seeds used (D_S)",
                  "examples", "share / target"], rows)


def _cut_text(mfd: dict[str, Any]) -> str:
    positive = "" if mfd.get("allow_nonpositive") else ", MFD > 0 only"
    if mfd.get("top_fraction") is not None:
        return f"top {mfd['top_fraction']:.0%} of MFD{positive}"
    if mfd.get("quantile") is not None:
        return f"MFD > quantile {mfd['quantile']}{positive}"
    return f"MFD > {mfd.get('delta', 2.0) if mfd.get('delta') is not None else 2.0}"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def _pct(part: float, total: float) -> str:
    return f"{100 * part / total:.1f}%" if total else ""


def task_distribution(store: Store, stages: list[dict[str, Any]]) -> Section:
    """Fig. 5: task shares in D, in D_S and in each round's re-sampled draws."""
    nodes = _by_node(stages)
    section = Section("tasks", "Task distribution before and after re-sampling (Fig. 5)",
                      intro="Share of each task type in the classified data D, in the hard seed set D_S, "
                            "in the expansion seeds each round draws from its pool by task weight, and in the "
                            "hard set each student S_r is trained on (Eq. 3 draws by task probability with "
                            "curriculum.sampling: task; Section 3.3, Appendix A). The target is the task "
                            "weights renormalised over the types present in the first round's pool.")
    classify = nodes.get(("classify", 0))
    labels = _labels(store, classify["key"] if classify else None)
    series: list[tuple[str, dict[str, float]]] = []
    if labels:
        counts: dict[str, float] = {}
        for label in labels.values():
            counts[label] = counts.get(label, 0) + 1
        series.append((f"D, classified (n={len(labels)})", counts))
        cut = nodes.get(("seed_cut", 0))
        hard = {i for i, v in _scores(store, cut["key"] if cut else None, "hard").items() if v == 1.0}
        if hard:
            seed_counts: dict[str, float] = {}
            for i in hard:
                t = labels.get(i, "Others")
                seed_counts[t] = seed_counts.get(t, 0) + 1
            series.append((f"D_S, hard seed (n={len(hard)})", seed_counts))
    target: dict[str, float] = {}
    resamples = sorted((s for s in stages if s["name"] == "resample" and s["info"].get("per_task")),
                       key=lambda s: s["round"])
    for s in resamples:
        per_task = s["info"]["per_task"]
        drawn = {t: v.get("drawn", 0) for t, v in per_task.items() if v.get("drawn")}
        series.append((f"round {s['round']} drawn (n={sum(drawn.values())})", drawn))
        if not target:
            weights = {t: v.get("weight", 0.0) for t, v in per_task.items() if v.get("pool")}
            mass = sum(weights.values())
            target = {t: w / mass for t, w in weights.items()} if mass else {}
    for s in sorted((s for s in stages if s["name"] == "train" and s["round"] > 0), key=lambda s: s["round"]):
        mix = s["info"].get("task_mix")  # the hard set S_r trains on (Eq. 3 draws with sampling: task)
        if isinstance(mix, dict) and mix:
            counts = {t: (v.get("drawn", v.get("count", 0)) if isinstance(v, dict) else v) for t, v in mix.items()}
            counts = {t: float(v) for t, v in counts.items() if isinstance(v, (int, float)) and v}
            if counts:
                series.append((f"S{s['round']} hard set as trained (n={int(sum(counts.values()))})", counts))
    if not series:
        section.notes.append("no classify stage with labels in this run: nothing to show")
        return section
    if not resamples:
        section.notes.append("no resample stage in this run (recipe.skip: [resample], or no round ran): only "
                             "the distribution before re-sampling is shown")
    types = [t for t in TASK_TYPES if any(t in c for _, c in series) or t in target]
    types += sorted({t for _, c in series for t in c} - set(types))
    header = ["task type"] + [name for name, _ in series] + (["target share"] if target else [])
    rows = []
    for t in types:
        row: list[Any] = [t]
        for _, c in series:
            total = sum(c.values())
            row.append(f"{int(c.get(t, 0))} ({_pct(c.get(t, 0), total)})" if c.get(t) else "")
        if target:
            row.append(f"{100 * target[t]:.1f}%" if t in target else "")
        rows.append(row)
    per_round = []
    for s in resamples:
        for t, v in s["info"]["per_task"].items():
            per_round.append([s["round"], t, v.get("pool", ""), v.get("drawn", ""), _num(v.get("weight")),
                              v.get("sampling", "")])
    mpl = _matplotlib()
    figure = Figure("Task distribution", "Share of each task type (%), before and after re-sampling")
    if mpl is None:
        figure.note = NO_MATPLOTLIB
    else:
        fig = mpl(figsize=(8, max(3.0, 0.32 * len(types) * max(1, len(series)) / 2 + 1.2)))
        ax = fig.add_subplot(1, 1, 1)
        height = 0.8 / len(series)
        for k, (name, c) in enumerate(series):
            total = sum(c.values()) or 1
            ys = [i + (k - (len(series) - 1) / 2) * height for i in range(len(types))]
            ax.barh(ys, [100 * c.get(t, 0) / total for t in types], height=height, label=name, color=f"C{k}")
        if target:
            ax.scatter([100 * target.get(t, 0) for t in types if t in target],
                       [i for i, t in enumerate(types) if t in target], marker="|", s=160, color="k",
                       label="target share", zorder=3)
        ax.set_yticks(range(len(types)), types, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("share of items (%)")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        figure.png = _png(fig)
    section.figures.append(figure)
    section.tables.append(Table("Counts per task type (share)", header, rows))
    if per_round:
        section.tables.append(Table("Re-sampling per round: pool vs drawn (resample stage info)",
                                    ["round", "task type", "pool", "drawn", "weight", "sampling"], per_round))
    return section


def mfd_distribution(store: Store, stages: list[dict[str, Any]]) -> Section:
    """Fig. 6: the MFD distribution of each judged student, with the seed cut."""
    from tapir.pipeline.mfd import describe_cut

    nodes = _by_node(stages)
    cut = nodes.get(("seed_cut", 0), {}).get("info", {})
    threshold = cut.get("threshold")
    rule = cut.get("rule")
    # The rule the cut used, as it ran (Eq. 2's D_S = {MFD > delta} only when that was the rule).
    rule_text = f"D_S = {{{rule}}}" if rule and rule.startswith("MFD >") else (f"D_S = {rule}" if rule else
                                                                                "no seed cut in this run")
    section = Section("mfd", "MFD distribution per round (Fig. 6)",
                      intro="MFD(x) = score(teacher) - score(student) (Eq. 1), from the judge stage of each "
                            f"student: S0 gives the seed cut, here {rule_text} (Eq. 2 with delta; relative "
                            "cuts are tapir's additions); later students are judged when "
                            "curriculum.recompute_mfd is on (Appendix D.2).")
    judges = sorted((s for s in stages if s["name"] == "judge"), key=lambda s: s["round"])
    series = [(s["round"], sorted(_scores(store, s["key"], "mfd").values())) for s in judges]
    series = [(r, v) for r, v in series if v]
    if threshold is not None and not isinstance(threshold, (int, float)):
        threshold = None
    if not series:
        section.notes.append("no MFD scores in this run (no judge stage has finished)")
        return section
    if len(series) == 1:
        section.notes.append("one judged round only: set curriculum.recompute_mfd: true to see how MFD moves")
    strict = bool(rule) and rule.startswith("MFD >")
    hard = sum(1 for v in _scores(store, nodes.get(("seed_cut", 0), {}).get("key"), "hard").values() if v == 1.0)
    rows = []
    for r, values in series:
        n = len(values)
        above = None
        if threshold is not None and math.isfinite(threshold):
            above = sum(1 for v in values if (v > threshold if strict else v >= threshold))
        rows.append([f"S{r}", n, _num(sum(values) / n), _num(_median(values)), _num(values[0]), _num(values[-1]),
                     _pct(sum(1 for v in values if v <= 0), n), "" if above is None else f"{above} ({_pct(above, n)})",
                     f"{hard} ({_pct(hard, n)})" if r == 0 and cut else ""])
    mpl = _matplotlib()
    cut_text = f"{rule} (threshold {threshold:.3g})" if rule and threshold is not None else (rule or "none")
    figure = Figure("MFD per round", f"Histogram of MFD per student; dashed line: the seed cut, {cut_text}")
    if mpl is None:
        figure.note = NO_MATPLOTLIB
    else:
        lo = min(v[0] for _, v in series)
        hi = max(v[-1] for _, v in series)
        if threshold is not None and math.isfinite(threshold):
            lo, hi = min(lo, threshold), max(hi, threshold)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        bins = [lo + (hi - lo) * k / 20 for k in range(21)]
        fig = mpl(figsize=(8, 1.9 * len(series) + 0.9))
        axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        for k, (ax, (r, values)) in enumerate(zip(axes, series)):
            ax.hist(values, bins=bins, color=f"C{k}", alpha=0.85)
            ax.set_ylabel("items", fontsize=8)
            ax.set_title(f"S{r}: n={len(values)}, mean {sum(values) / len(values):.3g}", fontsize=9, loc="left")
            if threshold is not None and math.isfinite(threshold):
                ax.axvline(threshold, color="k", linestyle="--", linewidth=1.2,
                           label=f"seed cut: {cut_text}" if k == 0 else None)
            ax.grid(alpha=0.3)
        if threshold is not None and math.isfinite(threshold):
            axes[0].legend(fontsize=8, loc="upper left")
        axes[-1].set_xlabel("MFD = score(teacher) - score(student)")
        figure.png = _png(fig)
    section.figures.append(figure)
    section.tables.append(Table("MFD per student", ["student", "n", "mean", "median", "min", "max", "MFD <= 0",
                                                    f"{'above' if strict else 'at or above'} the cut threshold",
                                                    "D_S (the cut on S0)"], rows))
    if cut:
        section.notes.append(f"seed cut: {describe_cut(cut)}; cut value {_num(threshold)}; "
                             f"{cut.get('hard', '?')} hard, {cut.get('easy', '?')} easy")
        section.tables.append(Table("What the seed cut did", ["rule", "judged", "selected (D_S)", "cut value",
                                                              "items at the cut value", "taken at the cut value",
                                                              "ties broken by", "excluded for MFD <= 0"],
                                    [[rule, cut.get("judged", ""), cut.get("hard", ""), _num(threshold),
                                      cut.get("at_cut", ""), cut.get("taken_at_cut", ""),
                                      cut.get("tie_break", ""), cut.get("excluded_nonpositive", "")]]))
    from tapir.judging import provenance_text

    for s in judges:
        text = provenance_text(s.get("info") or {})
        if text:
            section.notes.append(f"S{s['round']} judgments: {text}")
    return section


def _median(values: Sequence[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


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
    marks = ",".join("?" * len(keys))
    have = [r[0] for r in store.execute(
        f"select distinct model from benchmark_results where model in ({marks}) and run_id is not null "
        f"and benchmark != 'classifier'", keys)]
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


# --------------------------------------------------------------------------- ablations (Table 5)


def ablation_runs(store: Store, run: dict[str, Any]) -> list[tuple[str, str]]:
    """The ablation this run belongs to, as (setting, run id) pairs, in order.

    Found, first match wins: a JSON file ``ablation.json`` in the run's
    ``output_dir`` or its parent (a list of ``{"setting", "run_id"}``, a
    ``{"runs": [...]}`` object or a ``{setting: run_id}`` mapping; see
    :func:`load_ablation`), else the runs named ``<name>/ablation:<setting>``
    where ``<name>`` is this run's name without its own ``/ablation:`` tag."""
    out_dir = (run.get("config") or {}).get("output_dir")
    if out_dir:
        for folder in (Path(out_dir), Path(out_dir).parent):
            path = folder / ABLATION_FILE
            if path.is_file():
                try:
                    pairs = load_ablation(path)
                except TapirError:
                    continue
                if any(rid == run["id"] for _, rid in pairs) or folder == Path(out_dir):
                    return pairs
    base = (run.get("name") or "").split(ABLATION_TAG)[0]
    if not base:
        return []
    found: dict[str, str] = {}
    for rid, name in store.execute(
            "select id, name from runs where name like ? escape '\\' order by created_at, id",
            [base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ABLATION_TAG + "%"]):
        found[name[len(base) + len(ABLATION_TAG):]] = rid  # a later run of a setting replaces an earlier one
    return list(found.items())


def load_ablation(path: str | Path) -> list[tuple[str, str]]:
    """(setting, run id) pairs from an ablation JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TapirError(f"cannot read the ablation file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("runs", data.get("settings")), list):
        data = data.get("runs", data.get("settings"))
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        pairs = [(str(k), str(v)) for k, v in data.items() if isinstance(v, str)]
    elif isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and entry.get("run_id") and entry.get("setting"):
                pairs.append((str(entry["setting"]), str(entry["run_id"])))
            elif isinstance(entry, (list, tuple)) and len(entry) == 2:
                pairs.append((str(entry[0]), str(entry[1])))
    if not pairs:
        raise TapirError(f"{path}: expected a list of {{\"setting\": ..., \"run_id\": ...}} or a "
                         f"{{setting: run_id}} mapping")
    return pairs


def ablation_table(store: Store, settings: Sequence[tuple[str, str]]) -> Table:
    """Table 5 for (setting, run id) pairs: per setting its run, status,
    rounds, training examples of its last round and the benchmark scores of
    its last checkpoint (every primary benchmark column stored for it)."""
    from tapir.bench import model_key
    from tapir.pipeline.variants import ablations, setting_training

    # A setting's result is its last checkpoint, unless the setting names
    # another (full-alpaca is S0 of its run).
    chosen = {v.label: v.final_stage[1] for v in ablations({}) if v.final_stage and v.final_stage[0] == "train"}
    base_rows = []
    finals: dict[str, str] = {}
    for setting, rid in settings:
        row = store.execute("select id, status from runs where id = ?", [rid]).fetchone()
        if row is None:
            base_rows.append([setting, rid, "missing", "", "", "", ""])
            continue
        stages = _stages(store, rid)
        trains = sorted((s for s in stages if s["name"] == "train" and s["status"] == "done"),
                        key=lambda s: s["round"])
        if setting in chosen:
            trains = [s for s in trains if s["round"] == chosen[setting]]
        last = trains[-1] if trains else None
        path = (last or {}).get("info", {}).get("path")
        if path:
            finals[rid] = model_key(path)
        info = (last or {}).get("info", {})
        done = {s["round"]: s["info"] for s in stages if s["name"] == "train" and s["status"] == "done"}
        trained = setting_training(done, last["round"]) if last else {}
        base_rows.append([setting, rid, row[1], "" if last is None else last["round"], info.get("examples", ""),
                          info.get("hard_examples", ""),
                          *("" if trained.get(k) is None else trained[k] for k in ("examples", "steps", "tokens")),
                          path or ""])
    values: dict[str, dict[str, str]] = {}  # model -> column -> its latest run's value
    columns: list[str] = []
    table = None
    try:
        table = _benchmark_entries(store, finals.values())
    except TapirError:
        table = None
    if table is not None:
        for sec in table.sections:
            for col in sec.columns:
                name = f"{sec.benchmark}: {col}"
                columns.append(name)
                for e in sec.entries:
                    if e.run_id is not None and not e.is_base and e.scores.get(col) is not None:
                        values.setdefault(e.model, {})[name] = f"{e.scores[col]:.4g}"  # entries: oldest first
    rows = []
    for row in base_rows:
        model = finals.get(row[1])
        got = values.get(model, {}) if model else {}
        rows.append(row[:9] + [got.get(c, "") for c in columns] + [row[9]])
    note = None if columns else "no benchmark results for these runs' last checkpoints yet (tapir bench)"
    return Table("Ablation (Table 5)", ["setting", "run", "status", "round", "# train", "hard",
                                        "examples (setting)", "optimizer steps", "tokens", *columns,
                                        "last checkpoint"], rows, note=note)


def _ablation_section(store: Store, run: dict[str, Any], settings: Sequence[tuple[str, str]] | None) -> Section:
    section = Section("ablation", "Ablations (Table 5)",
                      intro="Each setting of the ablation is a run of a pipeline variant. Examples, optimizer "
                            "steps and tokens are the setting's own training: its curriculum rounds summed "
                            "(full-alpaca: S0); compare settings at equal steps with `tapir ablate --match-steps`. "
                            "Scores are those of "
                            "its last checkpoint (full-alpaca: S0), from the latest run of each benchmark.")
    pairs = list(settings) if settings is not None else ablation_runs(store, run)
    if not pairs:
        section.notes.append(f"this run is part of no ablation (no {ABLATION_FILE} in its output folder, no runs "
                             f"named '<name>{ABLATION_TAG}<setting>')")
        return section
    section.tables.append(ablation_table(store, pairs))
    return section


# --------------------------------------------------------------------------- stages


def stage_section(store: Store, run_id: str) -> Section:
    from tapir.runs import run_details

    details = run_details(store, run_id)
    section = Section("stages", "Stages: time, calls, tokens, cost, failures")
    rows = []
    totals = {k: 0.0 for k in ("ok", "failed", "calls", "tokens", "cost", "truncated", "seconds")}
    for s in details["stages"]:
        status = f"reused ({s['reused_from']})" if s.get("reused_from") else s["status"]
        values = {k: s.get(k) or 0 for k in ("ok", "failed", "calls", "tokens", "cost", "truncated")}
        values["seconds"] = s.get("seconds") or 0.0
        for k in totals:
            totals[k] += values[k]
        rows.append([s["name"], s["round"], status, values["ok"], values["failed"], values["calls"],
                     values["tokens"], f"{values['cost']:.4f}", values["truncated"], f"{values['seconds']:.1f}",
                     (s.get("key") or "")[:12]])
    rows.append(["total", "", "", int(totals["ok"]), int(totals["failed"]), int(totals["calls"]),
                 int(totals["tokens"]), f"{totals['cost']:.4f}", int(totals["truncated"]),
                 f"{totals['seconds']:.1f}", ""])
    section.tables.append(Table("Per stage", ["stage", "round", "status", "ok", "failed", "calls", "tokens",
                                              "cost $", "truncated", "seconds", "key"], rows, css="num"))
    errors = [[s["name"], s["round"], (s["info"].get("error") or "?").splitlines()[0][:300]]
              for s in details["stages"] if s["status"] == "failed"]
    if errors:
        section.tables.append(Table("Failed stages", ["stage", "round", "error"], errors))
    failures = [[f["stage"], f["round"], f["kind"], f["count"], f["example_item"], (f["example"] or "")[:300]]
                for f in details["failures"]]
    section.tables.append(Table("Failed items by kind", ["stage", "round", "kind", "count", "example item",
                                                         "example reason"], failures,
                                note=None if failures else "no failed items"))
    calls = [[r["role"], r["calls"], r["errors"] or 0, r["tokens"], f"{r['cost']:.4f}"]
             for r in details["calls_by_role"]]
    section.tables.append(Table("LLM calls by role", ["role", "calls", "errors", "tokens", "cost $"], calls,
                                note=None if calls else "no recorded LLM calls (local models are not logged as calls)"))
    return section


# --------------------------------------------------------------------------- the page


def build_report(store: Store, run_ref: str, *, ablation: Sequence[tuple[str, str]] | None = None) -> Report:
    """Everything the page shows, for run ``run_ref`` (id, prefix or name)."""
    run = find_run(store, run_ref)
    stages = _stages(store, run["id"])
    sections = [
        _config_section(run, stages),
        task_distribution(store, stages),
        mfd_distribution(store, stages),
        benchmark_rounds(store, stages),
        _ablation_section(store, run, ablation),
        stage_section(store, run["id"]),
    ]
    return Report(run, sections, utcnow())


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;
color:#1d1d1f;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1em;margin:1.2em 0 .4em}.meta{color:#555;font-size:.9em}
nav a{margin-right:1em;font-size:.9em}p.intro{color:#333;max-width:60em}
p.note{background:#fff8e1;border-left:3px solid #f0b400;padding:.4em .7em;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.82em;margin:.3em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f6}tbody tr:nth-child(even){background:#fafafa}
td{max-width:28em;overflow-wrap:anywhere}table.kv td:first-child{font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table_html(t: Table) -> str:
    out = [f"<h3>{_e(t.title)}</h3>"]
    if t.note:
        out.append(f'<p class="note">{_e(t.note)}</p>')
    if t.rows:
        cls = f' class="{_e(t.css)}"' if t.css else ""
        out.append(f"<table{cls}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
        for row in t.rows:
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def _figure_html(f: Figure) -> str:
    if f.png is None:
        return f'<p class="note">{_e(f.title)}: {_e(f.note or "no figure")}</p>'
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.title)}">'
            f"<figcaption>{_e(f.caption)}</figcaption></figure>")


def render_html(report: Report) -> str:
    run = report.run
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>tapir report: {_e(run['name'])} ({_e(run['id'])})</title>", f"<style>{CSS}</style>",
             "</head><body>",
             f"<h1>tapir run {_e(run['name'])}</h1>",
             f'<p class="meta">run {_e(run["id"])} · status {_e(run["status"])} · started {_e(run["created_at"])}'
             f' · updated {_e(run["updated_at"])} · tapir {_e(run.get("tapir_version"))} · report written '
             f"{_e(report.generated_at)}</p>",
             "<nav>" + "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in report.sections) + "</nav>"]
    for s in report.sections:
        parts.append(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>')
        if s.intro:
            parts.append(f'<p class="intro">{_e(s.intro)}</p>')
        for note in s.notes:
            parts.append(f'<p class="note">{_e(note)}</p>')
        parts.extend(_figure_html(f) for f in s.figures)
        parts.extend(_table_html(t) for t in s.tables)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(store: Store, run_id: str, path: str | Path | None = None, *,
                 ablation: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write the HTML report of ``run_id`` (id, prefix or name) to ``path``
    (default ``report-<run id>.html``) and return the path. ``ablation``:
    (setting, run id) pairs for the Table 5 section (default: found with
    :func:`ablation_runs`). Reads the store only."""
    report = build_report(store, run_id, ablation=ablation)
    out = Path(path) if path is not None else Path(f"report-{report.run['id']}.html")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(out)
    return out
