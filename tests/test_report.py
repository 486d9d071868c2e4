"""``tapir report``: a real two-round run (MFD judged each round) and a
single-round variant of it, benchmark rows for their checkpoints, then the
HTML report: self-contained, the figures and tables it must have, values
that match the store, read-only; and the same page opened in a real
headless Chromium (skipped with the reason when none is installed)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, write_config

from tapir.errors import TapirError

TRAINER = {"name": "hf", "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_length": 96,
                                     "lr": 1e-3}}


class Page(HTMLParser):
    """Images, tables (header + body rows) and external references of a page."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tables: list[dict] = []
        self.external: list[str] = []
        self.scripts = 0
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in = None
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if re.match(r"\s*(https?:)?//", value):
                self.external.append(value)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag in ("script", "link", "iframe", "object", "embed"):
            self.scripts += 1
        elif tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag in ("thead", "tbody"):
            self._in = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            if self._in == "thead":
                self.tables[-1]["header"] = self._row
            else:
                self.tables[-1]["rows"].append(self._row)
            self._row = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def table(page: Page, *header_start: str) -> dict:
    found = [t for t in page.tables if t["header"][: len(header_start)] == list(header_start)]
    assert found, f"no table with header {header_start}: {[t['header'][:4] for t in page.tables]}"
    return found[0]


def _add_bench_rows(store, paths: dict[int, str], offset: float = 0.0) -> dict[tuple[str, int], float]:
    """Rows as `tapir bench` stores them (a bench run per benchmark and
    checkpoint, the evaluator row contract in meta)."""
    from tapir.bench import bench_config, model_key, upsert_rows
    from tapir.runs import Run

    meta = {"judge": "gpt-4-turbo", "judge_mode": "reference", "failures": 0, "failure_reasons": {},
            "failure_example": None, "data_version": "v1", "subset": None}
    values = {}
    for r, path in paths.items():
        for bench, task, metric, value in (("mtbench", "overall", "score", 5.0 + 0.5 * r + offset),
                                           ("alpacaeval", "alpaca_eval", "length_controlled_winrate",
                                            3.0 + 2.0 * r + offset)):
            run = Run.start(store, bench_config(bench, path, {}), name=f"bench:{bench}:{path}")
            with run.stage(f"bench:{bench}"):
                upsert_rows(store, bench, model_key(path), run.id,
                            [{"task": task, "metric": metric, "value": value, "stderr": 0.1, "n": 80, "meta": meta}])
            run.finish()
            values[(bench, r)] = value
    return values


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """A two-round run with MFD each round, a one-round variant (both tagged
    as one ablation), benchmark rows for their checkpoints."""
    from tapir.pipeline.runner import distill
    from tapir.plugins import get_plugin_manager, reset_plugin_manager
    from tapir.store import open_store

    tmp = tmp_path_factory.mktemp("report")
    old = os.environ.get("TAPIR_QUIET")
    os.environ["TAPIR_QUIET"] = "1"
    reset_plugin_manager()
    get_plugin_manager().register(ScriptPlugin(), name="test-script")
    try:
        db = tmp / "t.db"
        full_cfg = write_config(tmp, tiny_model, name="tiny-report/ablation:full", trainer=TRAINER,
                                data={"path": str(SEED_DATA), "limit": 12},
                                curriculum={"rounds": 2, "alpha": 0.3, "alpha_step": 0.2,
                                            "expand_per_round": [4, 3], "recompute_mfd": True})
        full = distill(full_cfg, str(db))
        one = tmp / "one"
        one.mkdir()
        single_cfg = write_config(one, tiny_model, name="tiny-report/ablation:single-round", trainer=TRAINER,
                                  data={"path": str(SEED_DATA), "limit": 12},
                                  curriculum={"rounds": 1, "alpha": 0.3, "alpha_step": 0.2,
                                              "expand_per_round": [4], "recompute_mfd": True})
        single = distill(single_cfg, str(db))
        full_id, single_id = full.run.id, single.run.id
        full.store.close()
        single.store.close()
        store = open_store(db)
        paths = {s["round"]: json.loads(s["info"])["path"]
                 for s in store["stages"].rows_where("run_id = ? and name = 'train'", [full_id])}
        single_last = [json.loads(s["info"])["path"]
                       for s in store["stages"].rows_where("run_id = ? and name = 'train' and round = 1",
                                                           [single_id])][0]
        values = _add_bench_rows(store, paths)
        single_values = _add_bench_rows(store, {1: single_last}, offset=-0.25)
        store.close()
    finally:
        reset_plugin_manager()
        if old is None:
            os.environ.pop("TAPIR_QUIET", None)
        else:
            os.environ["TAPIR_QUIET"] = old
    return {"tmp": tmp, "db": db, "full": full_id, "single": single_id, "paths": paths, "values": values,
            "single_values": single_values}


@pytest.fixture(scope="module")
def report(built):
    from tapir.report import open_readonly, write_report

    digest = hashlib.sha256(built["db"].read_bytes()).hexdigest()
    store = open_readonly(built["db"])
    path = write_report(store, built["full"], built["tmp"] / "report.html")
    store.close()
    assert hashlib.sha256(built["db"].read_bytes()).hexdigest() == digest  # read-only
    keep = os.environ.get("TAPIR_REPORT_EXAMPLE")
    if keep:  # where a human (or the closing note) wants an example page
        shutil.copy(path, keep)
    return path


def _stages(db, run_id):
    import sqlite3

    conn = sqlite3.connect(db)
    rows = conn.execute("select name, round, key, info from stages where run_id = ? order by id", [run_id]).fetchall()
    conn.close()
    return [(n, r, k, json.loads(i or "{}")) for n, r, k, i in rows]


def test_report_is_self_contained_with_every_figure_and_table(built, report):
    import sqlite3

    page = parse(report)
    assert page.external == [] and page.scripts == 0
    assert "http://" not in report.read_text() and "https://" not in report.read_text()
    assert len(page.images) == 3  # Fig. 5, Fig. 6, Fig. 3
    assert all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in page.images)

    stages = _stages(built["db"], built["full"])
    info = {(n, r): i for n, r, _, i in stages}
    keys = {(n, r): k for n, r, k, _ in stages}
    conn = sqlite3.connect(built["db"])

    # Fig. 5: counts per task type in D are the classify stage's labels.
    counts = dict(conn.execute("select label, count(*) from classifications where scope = ? group by label",
                               [keys[("classify", 0)]]).fetchall())
    tasks = table(page, "task type", "D, classified (n=12)")
    assert {row[0]: int(row[1].split()[0]) for row in tasks["rows"] if row[1]} == counts
    drawn_header = [h for h in tasks["header"] if h.startswith("round ")]
    assert drawn_header == ["round 1 drawn (n=4)", "round 2 drawn (n=3)"]
    for r in (1, 2):  # the hard set each S_r trained on, when the train stage records its task mix (Eq. 3)
        mix = info[("train", r)].get("task_mix")
        if mix:
            col = next(i for i, h in enumerate(tasks["header"]) if h.startswith(f"S{r} hard set as trained"))
            assert {row[0]: int(row[col].split()[0]) for row in tasks["rows"] if row[col]} == mix
    resample = table(page, "round", "task type", "pool", "drawn")
    expected = [[str(r), t, str(v["pool"]), str(v["drawn"])] for r in (1, 2)
                for t, v in info[("resample", r)]["per_task"].items()]
    assert [row[:4] for row in resample["rows"]] == expected

    # Fig. 6: one row per judged student (recompute_mfd), the cut's D_S size.
    mfd = table(page, "student", "n", "mean", "median")
    assert [row[0] for row in mfd["rows"]] == ["S0", "S1", "S2"]
    for row, r in zip(mfd["rows"], (0, 1, 2)):
        values = [v for (v,) in conn.execute("select value from scores where scope = ? and name = 'mfd'",
                                             [keys[("judge", r)]])]
        assert int(row[1]) == len(values) == 12
        assert float(row[2]) == pytest.approx(sum(values) / len(values), rel=1e-3)
    assert mfd["rows"][0][-1].startswith(f"{info[('seed_cut', 0)]['hard']} (")
    # What the seed cut did, as the stage recorded it; the intro names the rule used, not Eq. 2's delta.
    cut = info[("seed_cut", 0)]
    did = table(page, "rule", "judged", "selected (D_S)", "cut value")
    assert did["rows"] == [[cut["rule"], str(cut["judged"]), str(cut["hard"]), f"{cut['threshold']:.4g}",
                            str(cut["at_cut"]), str(cut["taken_at_cut"]), cut["tie_break"],
                            str(cut["excluded_nonpositive"])]]
    assert cut["rule"].startswith("top 50% of judged items by MFD")
    text = report.read_text()
    assert "D_S = {MFD &gt; delta}" not in text and f"D_S = {html.escape(cut['rule'])}" in text

    # Fig. 3: the stored values of each checkpoint, per round.
    bench = table(page, "benchmark", "column", "model", "value")
    got = {(row[0], row[2]): float(row[3]) for row in bench["rows"]}
    assert got == {(b, f"S{r}"): v for (b, r), v in built["values"].items()}

    # Training per round: Eq. 4 alpha_r and the examples of each train stage.
    training = table(page, "student", "examples", "hard", "easy", "optimizer steps", "tokens trained", "alpha_r")
    assert [(row[0], int(row[1]), int(row[4]), int(row[5]), row[6]) for row in training["rows"]] == [
        (f"S{r}", info[("train", r)]["examples"], info[("train", r)]["steps"], info[("train", r)]["train_tokens"],
         f"{info[('train', r)]['alpha']:.4g}") for r in (0, 1, 2)]
    # Coverage of D_P per round (Eq. 3): every pair used with sampling: task.
    coverage = table(page, "student", "sampling", "task type", "pairs in D_P", "used", "coverage")
    totals = [row for row in coverage["rows"] if row[2] == "all types"]
    assert [(row[0], row[1], int(row[3]), int(row[4]), row[5]) for row in totals] == [
        (f"S{r}", "task", info[("train", r)]["coverage"]["available"], info[("train", r)]["coverage"]["available"],
         "100.0%") for r in (1, 2)]

    # Table 5: both settings, # train of their last round, their scores.
    ablation = table(page, "setting", "run", "status", "round", "# train")
    assert [row[:2] for row in ablation["rows"]] == [["full", built["full"]], ["single-round", built["single"]]]
    col = ablation["header"].index("mtbench: overall/score")
    assert float(ablation["rows"][0][col]) == built["values"][("mtbench", 2)]
    assert float(ablation["rows"][1][col]) == built["single_values"][("mtbench", 1)]
    assert int(ablation["rows"][0][4]) == info[("train", 2)]["examples"]
    # Each row's own training: the full setting's curriculum rounds summed (examples, steps, tokens).
    head = ablation["header"]
    for key, column in (("examples", "examples (setting)"), ("steps", "optimizer steps"),
                        ("train_tokens", "tokens")):
        assert int(ablation["rows"][0][head.index(column)]) == sum(info[("train", r)][key] for r in (1, 2))

    # Stage table: every stage of the run, then the total.
    stage_rows = table(page, "stage", "round", "status", "ok", "failed", "calls")["rows"]
    assert [(row[0], int(row[1])) for row in stage_rows[:-1]] == [(n, r) for n, r, _, _ in stages]
    assert stage_rows[-1][0] == "total"
    assert int(stage_rows[-1][5]) == sum(i.get("calls", 0) for _, _, _, i in stages)
    assert int(stage_rows[-1][6]) == sum(i.get("tokens", 0) for _, _, _, i in stages)
    conn.close()


def test_report_without_benchmarks_or_ablation_says_so(built, tmp_path):
    from tapir.report import open_readonly, write_report

    store = open_readonly(built["db"])
    # The single-round run has an ablation (tagged) but pass none explicitly.
    path = write_report(store, built["single"], tmp_path / "r.html", ablation=[])
    store.close()
    text = path.read_text()
    assert "part of no ablation" in text
    page = parse(path)
    assert len(page.images) == 3
    assert [row[0] for row in table(page, "student", "n", "mean")["rows"]] == ["S0", "S1"]


def test_unknown_run_and_missing_database_are_errors(built, tmp_path):
    from tapir.cli import _add_commands, cli
    from tapir.report import open_readonly, write_report

    store = open_readonly(built["db"])
    with pytest.raises(TapirError, match="no run 'nope'.*Recent runs"):
        write_report(store, "nope", tmp_path / "x.html")
    store.close()
    assert not (tmp_path / "x.html").exists()
    _add_commands()
    runner = CliRunner()
    missing = tmp_path / "none.db"
    result = runner.invoke(cli, ["--db", str(missing), "report", "nope"])
    assert result.exit_code != 0 and "no database" in result.output
    assert not missing.exists()
    result = runner.invoke(cli, ["--db", str(built["db"]), "report", "nope", "-o", str(tmp_path / "y.html")])
    assert result.exit_code == 2 and "no run 'nope'" in result.output  # a command-line mistake
    out = tmp_path / "z.html"
    result = runner.invoke(cli, ["--db", str(built["db"]), "report", built["full"][:8], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.output


def test_ablation_file_forms(tmp_path):
    from tapir.report import load_ablation

    for data in ([{"setting": "full", "run_id": "a"}, {"setting": "seed", "run_id": "b"}],
                 {"runs": [{"setting": "full", "run_id": "a"}, {"setting": "seed", "run_id": "b"}]},
                 {"full": "a", "seed": "b"}):
        path = tmp_path / "ablation.json"
        path.write_text(json.dumps(data))
        assert load_ablation(path) == [("full", "a"), ("seed", "b")]
    path.write_text("[]")
    with pytest.raises(TapirError, match="expected a list"):
        load_ablation(path)


def _chromium() -> str | None:
    for name in (os.environ.get("TAPIR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHECK = """<script>window.addEventListener('load', function () {
  var im = [].slice.call(document.images);
  var ok = im.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var rows = [].slice.call(document.querySelectorAll('table')).map(function (t) {
    return t.tBodies.length ? t.tBodies[0].rows.length : 0; });
  document.body.setAttribute('data-images', String(im.length));
  document.body.setAttribute('data-images-ok', String(ok.length));
  document.body.setAttribute('data-widths', im.map(function (i) { return i.naturalWidth; }).join(','));
  document.body.setAttribute('data-table-rows', rows.join(','));
  document.body.setAttribute('data-checked', 'yes');
});</script>"""


def test_report_in_a_headless_browser(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium, or set TAPIR_CHROMIUM)")
    page = tmp_path / "check.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"no <body> in what the browser dumped: {dom[:300]!r}"
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-checked") == "yes", attrs
    assert attrs["data-images"] == "3" and attrs["data-images-ok"] == "3", attrs
    assert all(int(w) > 300 for w in attrs["data-widths"].split(",")), attrs
    rows = [int(n) for n in attrs["data-table-rows"].split(",")]
    expected = [len(t["rows"]) for t in parse(report).tables]
    assert rows == expected and all(n > 0 for n in rows), (rows, expected)
    # A screenshot renders (not blank: the figures put many colours on it).
    shot = tmp_path / "shot.png"
    subprocess.run([*args, "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").resize((300, 600)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50


def test_ablation_table_shows_the_latest_run_of_a_benchmark_once(built, tmp_path):
    """A checkpoint benchmarked twice (say the held-out loss re-run under a
    new stage key) shows its latest value, not both joined."""
    from tapir.bench import model_key, upsert_rows
    from tapir.report import ablation_table, open_readonly
    from tapir.store import open_store

    db = tmp_path / "t.db"
    shutil.copy(built["db"], db)
    store = open_store(db)
    last = built["paths"][2]
    meta = {"judge": "gpt-4-turbo", "judge_mode": "reference", "failures": 0, "failure_reasons": {},
            "failure_example": None, "data_version": "v1", "subset": None}
    for run_id, value in (("older-run", 1.25), ("newer-run", 1.5)):
        upsert_rows(store, "quiz", model_key(last), run_id,
                    [{"task": "t", "metric": "acc", "value": value, "stderr": None, "n": 4, "meta": meta}])
    store.close()
    store = open_readonly(db)
    table = ablation_table(store, [("full", built["full"])])
    store.close()
    col = table.header.index("quiz: t/acc")
    assert table.rows[0][col] == "1.5"
