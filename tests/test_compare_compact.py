"""``tapir compare`` as one pastes it: rows labelled ``backbone · setting ·
S_r`` and ordered by backbone, setting and round (never by the train stages'
hashes) in every format and in ``tapir.compare().entries``; run names,
run-id prefixes, variant families and study names as references; the
compact table (one row per model, ``mean ± stderr`` per benchmark) as the
default; a plot whose y axis fits the data and whose labels fit the figure."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

import tapir
from tapir.bench import upsert_rows
from tapir.compare import build, compact, render
from tapir.runs import Run

QWEN, SMOL = "hf:Qwen/Qwen2.5-0.5B", "hf:HuggingFaceTB/SmolLM2-135M-Instruct"
# Train stage keys in hash order r3, r1, r2, r0: the order an older compare showed the rounds in.
KEYS = {3: "1a" * 12, 1: "2b" * 12, 2: "3c" * 12, 0: "4d" * 12}
META = {"judge": "judge-x", "judge_mode": "reference", "data_version": "sha256:0123", "subset": None, "failures": 0}


def scores(store, model, mtbench=None, alpaca=None, lmeval=None, tag=""):
    """Rows as the three evaluators store them: (value, stderr) pairs."""
    if mtbench is not None:
        upsert_rows(store, "mtbench", model, f"mt{tag}-{model}", [
            {"task": "overall", "metric": "score", "value": mtbench[0], "stderr": mtbench[1], "n": 160, "meta": META},
            {"task": "turn1", "metric": "score", "value": mtbench[0] + 0.5, "stderr": 0.2, "n": 80, "meta": META}])
    if alpaca is not None:
        upsert_rows(store, "alpacaeval", model, f"ae{tag}-{model}", [
            {"task": "alpaca_eval", "metric": "win_rate", "value": alpaca[0], "stderr": alpaca[1], "n": 805,
             "meta": META},
            {"task": "alpaca_eval", "metric": "discrete_win_rate", "value": 0.5, "stderr": None, "n": 805,
             "meta": {**META, "primary": False}}])
    if lmeval is not None:
        upsert_rows(store, "lmeval", model, f"lm{tag}-{model}", [
            {"task": task, "metric": metric, "value": v, "stderr": se, "n": 100,
             "meta": {**META, "judge": None, "judge_mode": None, "primary": True}}
            for (task, metric), (v, se) in lmeval.items()] + [
            {"task": "arc_easy", "metric": "acc_norm", "value": 0.1, "stderr": 0.01, "n": 100,
             "meta": {**META, "primary": False}}])


def pipeline(store, name, base=QWEN, rounds=(0, 1, 2, 3), study=None, salt=""):
    """A pipeline run as the engine stores it: checkpoints under the train stages' keys."""
    config = {"name": name, "student": {"model": base}, **({"study": study} if study else {}), "salt": salt}
    run = Run.start(store, config, name=name)
    for r in rounds:
        key = KEYS[r] + salt
        path = ckpt(name, r, salt)
        run.mark_stage("train", r, key, "done", {"path": path})
        store["checkpoints"].insert({"scope": key, "round": r, "path": path, "base_model": base, "trainer": "hf"})
    run.finish()
    return run.id


def ckpt(name, r, salt=""):
    return f"/out/{name.replace('/', '_')}/stages/train-r{r}-{KEYS[r][:12]}{salt}"


@pytest.fixture
def demo(store):
    """tapir-demo on Qwen (S0..S3), an ablation arm on Qwen, tapir-demo on SmolLM2 (S0, S1)."""
    run = pipeline(store, "tapir-demo")
    arm = pipeline(store, "demo/ablation:seed-alpaca", rounds=(0,), salt="arm")
    smol = pipeline(store, "tapir-demo-smol", base=SMOL, rounds=(1, 0), salt="smol")
    scores(store, QWEN, mtbench=(5.0, 0.12), alpaca=(0.525, 0.080), lmeval={("arc_easy", "acc"): (0.627, 0.011)})
    for r, (mt, wr, arc) in {3: (6.4, 0.61, 0.579), 1: (5.9, 0.55, 0.601), 2: (6.1, 0.58, 0.590),
                             0: (5.5, 0.53, 0.612)}.items():  # stored in hash order too
        scores(store, ckpt("tapir-demo", r), mtbench=(mt, 0.1), alpaca=(wr, 0.0175), lmeval={("arc_easy", "acc"):
                                                                                                 (arc, 0.0114)})
    scores(store, ckpt("demo/ablation:seed-alpaca", 0, "arm"), mtbench=(5.2, 0.1))
    scores(store, SMOL, mtbench=(3.0, 0.2))
    scores(store, ckpt("tapir-demo-smol", 1, "smol"), mtbench=(3.5, None))
    scores(store, ckpt("tapir-demo-smol", 0, "smol"), mtbench=(3.25, 0.2))
    return {"run": run, "arm": arm, "smol": smol}


DEMO = ["Qwen2.5-0.5B · base", "Qwen2.5-0.5B · tapir-demo · S0", "Qwen2.5-0.5B · tapir-demo · S1",
        "Qwen2.5-0.5B · tapir-demo · S2", "Qwen2.5-0.5B · tapir-demo · S3"]


def test_a_run_by_name_id_or_prefix_gives_its_rounds_in_order_under_readable_labels(store, demo):
    for ref in ("tapir-demo", demo["run"], demo["run"][:8]):
        table = build(store, [ref])
        assert [m.label for m in table.models] == DEMO, ref
        assert [e.label for e in table.section("mtbench").entries] == DEMO
        assert [e.round for e in table.section("mtbench").entries] == [None, 0, 1, 2, 3]
        assert [r.label for r in compact(table).rows] == DEMO
    entry = table.section("mtbench").entries[1]
    assert (entry.backbone, entry.setting, entry.model) == ("Qwen2.5-0.5B", "tapir-demo", ckpt("tapir-demo", 0))


def test_every_format_and_the_python_api_keep_the_order(store, demo, tmp_path):
    table = build(store)
    everything = ["Qwen2.5-0.5B · base", "Qwen2.5-0.5B · seed-alpaca · S0", *DEMO[1:],
                  "SmolLM2-135M-Instruct · base", "SmolLM2-135M-Instruct · tapir-demo-smol · S0",
                  "SmolLM2-135M-Instruct · tapir-demo-smol · S1"]
    assert [e.label for e in table.section("mtbench").entries] == everything
    assert [r["label"] for r in json.loads(render(table, "json"))["rows"]] == everything
    assert [r["model"] for r in csv.DictReader(io.StringIO(render(table, "csv")))] == everything
    full_json = [r["label"] for r in json.loads(render(table, "json", full=True))["rows"]
                 if r["benchmark"] == "mtbench"]
    assert full_json == everything
    full_csv = [r["label"] for r in csv.DictReader(io.StringIO(render(table, "csv", full=True)))
                if r["benchmark"] == "mtbench"]
    assert full_csv == everything
    markdown = [line.split(" | ")[0].lstrip("| ") for line in render(table, "markdown").splitlines()[2:11]]
    assert markdown == everything
    api = tapir.compare(["tapir-demo"], db=tmp_path / "test.db")
    assert [e.label for e in api.entries if e.benchmark == "alpacaeval"] == DEMO


def test_variant_families_and_studies_are_references(store, demo):
    assert [m.label for m in build(store, ["demo"]).models] == ["Qwen2.5-0.5B · base",
                                                                 "Qwen2.5-0.5B · seed-alpaca · S0"]
    pipeline(store, "study-a-full", rounds=(1,), study={"name": "study-a", "setting": "full"}, salt="sa")
    pipeline(store, "study-a-seed", rounds=(0,), study={"name": "study-a", "setting": "seed-alpaca"}, salt="sb")
    pipeline(store, "study-b-run", base=SMOL, rounds=(0,), study="study-b", salt="sc")
    scores(store, ckpt("study-a-full", 1, "sa"), mtbench=(6.0, 0.1))
    scores(store, ckpt("study-a-seed", 0, "sb"), mtbench=(5.6, 0.1))
    scores(store, ckpt("study-b-run", 0, "sc"), mtbench=(3.1, 0.1))
    assert [m.label for m in build(store, ["study-a"]).models] == [
        "Qwen2.5-0.5B · base", "Qwen2.5-0.5B · full · S1", "Qwen2.5-0.5B · seed-alpaca · S0"]
    assert [m.label for m in build(store, ["study-b"]).models] == [
        "SmolLM2-135M-Instruct · base", "SmolLM2-135M-Instruct · study-b-run · S0"]


def test_compact_cells_are_mean_and_stderr_per_benchmark(store, demo):
    table = build(store, ["tapir-demo"])
    view = compact(table)
    assert [c.name for c in view.columns] == ["mtbench", "alpacaeval", "arc_easy"]
    assert [(c.benchmark, c.column) for c in view.columns] == [
        ("mtbench", "overall/score"), ("alpacaeval", "alpaca_eval/win_rate"), ("lmeval", "arc_easy/acc")]
    assert render(table, "markdown") == """\
| model | mtbench | alpacaeval | arc_easy |
|---|---:|---:|---:|
| Qwen2.5-0.5B · base | 5.000 ± 0.120 | 0.525 ± 0.080 | 0.627 ± 0.011 |
| Qwen2.5-0.5B · tapir-demo · S0 | 5.500 ± 0.100 | 0.530 ± 0.018 | 0.612 ± 0.011 |
| Qwen2.5-0.5B · tapir-demo · S1 | 5.900 ± 0.100 | 0.550 ± 0.018 | 0.601 ± 0.011 |
| Qwen2.5-0.5B · tapir-demo · S2 | 6.100 ± 0.100 | 0.580 ± 0.018 | 0.590 ± 0.011 |
| Qwen2.5-0.5B · tapir-demo · S3 | 6.400 ± 0.100 | 0.610 ± 0.018 | 0.579 ± 0.011 |

Columns (mean ± stderr): mtbench = overall/score; alpacaeval = alpaca_eval/win_rate; \
arc_easy = lmeval arc_easy/acc
"""
    latex = render(table, "latex").splitlines()
    assert latex[:4] == [r"\begin{tabular}{lrrr}", r"\toprule", r"Model & mtbench & alpacaeval & arc\_easy \\",
                         r"\midrule"]
    assert latex[4] == r"Qwen2.5-0.5B $\cdot$ base & 5.000 $\pm$ 0.120 & 0.525 $\pm$ 0.080 & 0.627 $\pm$ 0.011 \\"
    assert latex[9:11] == [r"\bottomrule", r"\end{tabular}"] and latex[11].startswith("% Columns")
    rows = list(csv.reader(io.StringIO(render(table, "csv"))))
    assert rows[0] == ["model", "backbone", "setting", "round", "mtbench", "mtbench stderr", "alpacaeval",
                       "alpacaeval stderr", "arc_easy", "arc_easy stderr"]
    assert rows[1] == ["Qwen2.5-0.5B · base", "Qwen2.5-0.5B", "base", "", "5.0", "0.12", "0.525", "0.08", "0.627",
                       "0.011"]
    assert rows[5] == ["Qwen2.5-0.5B · tapir-demo · S3", "Qwen2.5-0.5B", "tapir-demo", "3", "6.4", "0.1", "0.61",
                       "0.0175", "0.579", "0.0114"]
    data = json.loads(render(table, "json"))
    assert data["rows"][3]["cells"]["arc_easy"] == {"value": 0.59, "stderr": 0.0114, "n": 100,
                                                   "run_id": f"lm-{ckpt('tapir-demo', 2)}", "subset": None,
                                                   "status": "?"}


def test_compact_shows_one_run_per_cell_and_says_which(store, demo):
    s3 = ckpt("tapir-demo", 3)
    upsert_rows(store, "mtbench", s3, "mt-subset", [
        {"task": "overall", "metric": "score", "value": 9.0, "stderr": 0.5, "n": 10,
         "meta": {**META, "subset": "limit=10"}}])
    upsert_rows(store, "mtbench", SMOL, "mt-smol-sub", [
        {"task": "overall", "metric": "score", "value": 2.0, "stderr": None, "n": 10,
         "meta": {**META, "subset": "limit=10"}}])
    store.execute("delete from benchmark_results where run_id = ?", [f"mt-{SMOL}"])
    store.db.conn.commit()
    view = compact(build(store, [s3, SMOL]))
    cell = view.row("Qwen2.5-0.5B · tapir-demo · S3").cells["mtbench"]
    assert (cell.value, cell.run_id) == (6.4, f"mt-{s3}")  # the full run, not the later subset
    assert view.row("SmolLM2-135M-Instruct · base").cells["mtbench"].mark == "*"
    text = render(build(store, [s3, SMOL]), "table")
    assert "SmolLM2-135M-Instruct · base" in text and "2.000*" in text
    assert (f"Qwen2.5-0.5B · tapir-demo · S3: 2 runs of mtbench; shown: run mt-{s3} (full, ?); "
            "--full lists every run") in text
    assert "* SmolLM2-135M-Instruct · base mtbench: limit=10 (run mt-smol-sub)" in text
    # a model without a run of a benchmark: no cell, shown as '-'
    assert view.row("SmolLM2-135M-Instruct · base").cells["alpacaeval"] is None
    assert [line.split()[-2:] for line in text.splitlines() if line.startswith("SmolLM2")] == [["-", "-"]]


def test_cli_takes_a_run_name_and_prints_the_compact_table(cli, store, demo, tmp_path):
    db = str(tmp_path / "test.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "compare", "tapir-demo", "--format", "table"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "mtbench", "alpacaeval", "arc_easy"]
    assert lines[5] == ("Qwen2.5-0.5B · tapir-demo · S3  6.400 ± 0.100  0.610 ± 0.018  0.579 ± 0.011")
    full = runner.invoke(cli, ["--db", db, "compare", "tapir-demo", "--full", "--format", "csv"])
    assert full.exit_code == 0 and full.stdout.startswith("benchmark,label,model,base,round,run,status")
    bad = runner.invoke(cli, ["--db", db, "compare", "tapir-demo", "--full", "--format", "latex"])
    assert bad.exit_code == 2 and "--format latex is for the compact table" in bad.stderr
    unknown = runner.invoke(cli, ["--db", db, "compare", "no-such-run"])
    assert unknown.exit_code == 2 and "unknown model, run or checkpoint 'no-such-run'" in unknown.stderr


def test_an_ambiguous_run_prefix_is_an_error(store, demo):
    from tapir.compare import UnknownReference

    store["runs"].insert({"id": demo["run"][:8] + "ffffffff", "name": "other", "config": "{}", "status": "done"})
    with pytest.raises(UnknownReference, match=f"run id prefix '{demo['run'][:8]}' is ambiguous"):
        build(store, [demo["run"][:8]])


def test_plot_fits_the_y_axis_annotates_values_and_keeps_labels_inside(store, demo):
    pytest.importorskip("matplotlib")
    from tapir.compare.chart import figure

    fig = figure(build(store, ["tapir-demo"], benchmarks=["lmeval"]))
    [ax] = fig.axes
    bottom, top = ax.get_ylim()
    # 0.627 -> 0.579 must show: the axis starts near the data, not at 0
    assert 0.5 < bottom < 0.579 - 0.0114 and 0.627 + 0.011 < top < 0.7
    assert [t.get_text() for t in ax.texts] == ["0.627", "0.612", "0.601", "0.590", "0.579"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ["Qwen2.5-0.5B\nbase", *[f"Qwen2.5-0.5B\ntapir-demo\nS{r}"
                                                                     for r in range(4)]]
    for t in [*labels, *ax.texts, ax.title]:
        ext = t.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, t.get_text()
    # every panel of the full store: labels inside too
    fig = figure(build(store))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for t in ax.get_xticklabels():
            ext = t.get_window_extent(renderer)
            assert fig.bbox.x0 <= ext.x0 and ext.x1 <= fig.bbox.x1 and fig.bbox.y0 <= ext.y0, t.get_text()


def test_two_runs_of_one_name_are_told_apart_by_their_run_id(store, demo):
    again = pipeline(store, "tapir-demo", rounds=(1,), salt="edited")  # a re-run with an edited config
    scores(store, ckpt("tapir-demo", 1, "edited"), mtbench=(6.0, 0.1))
    labels = [m.label for m in build(store).models]
    assert labels.count(f"Qwen2.5-0.5B · tapir-demo · S1 [{demo['run'][:6]}]") == 1
    assert labels.count(f"Qwen2.5-0.5B · tapir-demo · S1 [{again[:6]}]") == 1
    assert "Qwen2.5-0.5B · tapir-demo · S2" in labels  # no twin: no suffix
    # the name means the latest run of that name
    assert [m.label for m in build(store, ["tapir-demo"]).models] == ["Qwen2.5-0.5B · base",
                                                                      "Qwen2.5-0.5B · tapir-demo · S1"]
