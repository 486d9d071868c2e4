"""The run's sections: its config and training sets, the task distribution
before and after re-sampling (Fig. 5), the MFD per round with the seed cut
(Fig. 6)."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from tapir.report.figures import NO_MATPLOTLIB, _matplotlib, _png
from tapir.report.pieces import Figure, Section, Table
from tapir.report.queries import _by_node, _labels, _scores
from tapir.store.db import Store
from tapir.tasks import TASK_TYPES


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
    from tapir.judge_reads import provenance_text

    for s in judges:
        text = provenance_text(s.get("info") or {})
        if text:
            section.notes.append(f"S{s['round']} judgments: {text}")
    return section


def _median(values: Sequence[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
