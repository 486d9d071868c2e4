"""``tapir study``: students x settings x benchmarks as one named study that
shares every stage not depending on the axis; its dry run per student and
setting; ``--set students``; the study tag in each run's config; and the
one-page study report (checked in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlite_utils
import yaml
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, ScriptTeacher, write_config

from tapir import hookimpl
from tapir.options import Options


class Quiz:
    """A benchmark double: the score grows with the round in the model's path,
    and the second backbone (a folder named tiny-2, whose config.json, kept
    by its trained checkpoints, carries a marker) scores 0.05 more."""

    class Options(Options):
        pass

    def __init__(self, options):
        self.options = options

    def preflight(self, model):
        return []

    def run(self, model, store, *, run_id, force=False):
        r = next((int(model.split("train-r")[1][0]) for _ in [0] if "train-r" in model), -1)
        config = Path(model) / "config.json"
        marked = config.is_file() and json.loads(config.read_text()).get("tapir_test_backbone") == "tiny-2"
        bonus = 0.05 if "tiny-2" in model or marked else 0.0
        meta = {"judge": "quiz-judge", "judge_mode": "reference", "failures": 0, "failure_reasons": {},
                "failure_example": None, "data_version": "quiz-1", "subset": None}
        return [{"task": "quiz", "metric": "acc", "value": round(0.2 + 0.1 * (r + 1) + bonus, 4), "stderr": 0.01,
                 "n": 10, "meta": meta}]


class QuizPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("quiz", Quiz, description="a benchmark double")


@pytest.fixture
def cli_plugins():
    return [(ScriptPlugin(), "test-script"), (QuizPlugin(), "test-quiz")]


def _data(tmp_path, tiny_model, **extra) -> dict:
    extra.setdefault("evaluation", {"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 4}})
    path = write_config(
        tmp_path, tiny_model, judge={"name": "student-loss"},
        trainer={"name": "hf", "options": {"max_steps": 1, "per_device_train_batch_size": 8, "max_length": 64,
                                           "learning_rate": 1e-3}},
        curriculum={"rounds": 2, "expand_per_round": [2, 2]}, **extra)
    return yaml.safe_load(path.read_text())


def _second(tmp_path, tiny_model):
    other = tmp_path / "tiny-2"
    if not other.exists():
        shutil.copytree(tiny_model, other)
        config = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**config, "tapir_test_backbone": "tiny-2"}))
    return other


def _write(tmp_path, data, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- config and --set


def test_set_students_replaces_the_student_and_keeps_its_settings():
    from tapir.config import PipelineConfig, apply_overrides, parse

    data = {"name": "x", "data": {"path": "a"}, "teacher": {"name": "default"}, "judge": {"name": "j"},
            "classifier": {"name": "c"},
            "student": {"model": "hf:a", "options": {"batch_size": 3}, "generation": {"max_new_tokens": 7}}}
    config = parse(apply_overrides(data, ["students=[hf:a, hf:b]"]), PipelineConfig, "c")
    assert config.student is None
    assert [s.model for s in config.students] == ["hf:a", "hf:b"]
    assert all(s.options == {"batch_size": 3} and s.generation.max_new_tokens == 7 for s in config.students)
    # a mapping entry is taken as written; `--set student=...` goes back to one student
    config = parse(apply_overrides(data, ["students=[{model: hf:c}]"]), PipelineConfig, "c")
    assert config.students[0].model == "hf:c" and config.students[0].options == {}
    back = apply_overrides({**{k: v for k, v in data.items() if k != "student"}, "students": ["hf:a", "hf:b"]},
                           ["student={model: hf:z}"])
    assert "students" not in back and parse(back, PipelineConfig, "c").student.model == "hf:z"
    # bare ids in the file; `study:` as a name
    config = parse({**{k: v for k, v in data.items() if k != "student"}, "students": ["hf:a"], "study": "s1"},
                   PipelineConfig, "c")
    assert config.students[0].model == "hf:a" and config.study.name == "s1" and config.study.setting is None


def test_study_runs_are_students_times_settings_with_a_study_tag(tmp_path, tiny_model):
    from tapir.study import parse_settings, study_runs

    data = _data(tmp_path, tiny_model)
    data["students"] = [data.pop("student"), {"model": f"hf:{_second(tmp_path, tiny_model)}"}]
    data["study"] = "backbones"
    runs = study_runs(data, parse_settings("seed-alpaca,full"))
    assert [(r.label, r.setting) for r in runs] == [("tiny-llama", "seed-alpaca"), ("tiny-llama", "full"),
                                                    ("tiny-2", "seed-alpaca"), ("tiny-2", "full")]
    tags = [r.config["study"] for r in runs]
    assert tags[1] == {"name": "backbones", "student": f"hf:{tiny_model}", "setting": "full"}
    assert all("students" not in r.config for r in runs)
    assert runs[2].config["student"]["model"] == f"hf:{tmp_path / 'tiny-2'}"
    assert runs[0].config["curriculum"]["expand_per_round"] == [0]  # seed-alpaca's edits
    assert runs[1].config["curriculum"]["expand_per_round"] == [2, 2]
    assert len({r.config["output_dir"] for r in runs}) == 4 and len({r.config["name"] for r in runs}) == 4
    assert parse_settings(None) == ["full"] and len(parse_settings("all")) == 6


def test_unknown_setting_is_refused_before_anything_is_written(tmp_path, tiny_model, cli):
    data = _data(tmp_path, tiny_model)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "study", str(_write(tmp_path, data)),
                                      "--settings", "full,tapir-lite"])
    assert result.exit_code == 2, result.output
    assert "unknown setting(s) tapir-lite" in result.output and "full-alpaca" in result.output
    assert not db.exists()


def test_distill_api_with_students_points_to_the_study(tmp_path, tiny_model, register_plugin):
    import tapir
    from tapir.errors import ConfigError

    register_plugin(ScriptPlugin(), "test-script")
    data = _data(tmp_path, tiny_model)
    data["students"] = [data.pop("student")]
    with pytest.raises(ConfigError, match=r"tapir\.study\(CONFIG\)"):
        tapir.distill(data, db=tmp_path / "t.db")
    assert not (tmp_path / "t.db").exists()


# --------------------------------------------------------------------------- the dry run


def test_dry_run_plans_each_student_and_setting_counting_shared_stages_once(tmp_path, tiny_model, cli):
    data = _data(tmp_path, tiny_model, evaluation={"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 4},
                                                  "benchmarks": [{"name": "quiz"}]})
    other = _second(tmp_path, tiny_model)
    cfg = _write(tmp_path, data)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "study", str(cfg), "--dry-run",
                                      "--set", f"students=[hf:{tiny_model}, hf:{other}]"])
    assert result.exit_code == 0, result.output
    assert not db.exists()
    out = result.output
    assert "study tiny-pipeline: 2 student(s) x 1 setting(s) (full) = 2 run(s); benchmarks: quiz" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split()[:1] in (["tiny-llama"], ["tiny-2"], ["total"])}
    first, second, total = rows["tiny-llama"], rows["tiny-2"], rows["total"]
    # a row: student setting run reused calls in out examples steps price; the total: no setting
    assert int(first[3]) == 0 and int(second[3]) >= 4  # ingest, teacher answers, classify, held-out answers
    assert int(first[2]) + int(first[3]) == int(second[2]) + int(second[3])
    calls = [int(r[4].replace(",", "")) for r in (first, second)]
    # the teacher answers D (16 items) and the held-out set (4) once, for the first student
    assert calls[0] - calls[1] == 16 + 4
    assert int(total[3].replace(",", "")) == sum(calls)
    assert int(first[8]) == int(second[8]) == 3  # S0 + two rounds at max_steps 1
    assert int(total[7]) == 6
    # tapir distill on a config with students prints the same plan
    data["students"] = [data.pop("student"), {"model": f"hf:{other}", "options": {"batch_size": 16},
                                              "generation": {"max_new_tokens": 12}}]
    same = CliRunner().invoke(cli, ["--db", str(db), "distill", str(_write(tmp_path, data, "s2.yaml")),
                                    "--dry-run"])
    assert same.exit_code == 0, same.output
    assert same.output.split("students:")[0] == out.split("students:")[0]


def test_python_api_dry_run_returns_the_plan_per_run(tmp_path, tiny_model, register_plugin):
    import tapir

    register_plugin(ScriptPlugin(), "test-script")
    data = _data(tmp_path, tiny_model, study={"name": "api"})
    plans = tapir.study(data, db=tmp_path / "t.db", settings="full-alpaca,full", dry_run=True,
                        overrides=[f"students=[hf:{tiny_model}, hf:{_second(tmp_path, tiny_model)}]"])
    assert [(p.run.label, p.run.setting) for p in plans] == [("tiny-llama", "full-alpaca"), ("tiny-llama", "full"),
                                                            ("tiny-2", "full-alpaca"), ("tiny-2", "full")]
    assert plans[1].stages_run <= 1 and sum(plans[1].calls.values()) == 0  # full after full-alpaca: all reused
    assert plans[0].calls["teacher"] - plans[2].calls["teacher"] == 16 + 4
    assert plans[0].run.config["study"] == {"name": "api", "student": f"hf:{tiny_model}", "setting": "full-alpaca"}
    assert "study api: 2 student(s) x 2 setting(s)" in tapir.study.render_plan(plans)
    assert not (tmp_path / "t.db").exists()


def test_dry_run_refuses_a_study_above_a_runs_budget(tmp_path, tiny_model, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used-0000000000")
    data = _data(tmp_path, tiny_model, budget={"max_cost_usd": 0.0055})
    data["teacher"]["model"]["model"] = "openai/gpt-4o-mini"  # priced in litellm's map; never called here
    data["rewriter"]["model"]["model"] = "openai/gpt-4o-mini"
    data["students"] = [data.pop("student"), {"model": f"hf:{_second(tmp_path, tiny_model)}"}]
    cfg = _write(tmp_path, data)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "study", str(cfg), "--dry-run"])
    assert result.exit_code == 2, result.output
    # the first backbone pays the shared stages: only its run passes the budget
    assert "tiny-llama/full: the plan's estimated cost $0.01 is above budget.max_cost_usd" in result.output
    assert "tiny-2/full" not in result.output.split("priced above its budget")[1]
    shown = CliRunner().invoke(cli, ["--db", str(db), "study", str(cfg), "--dry-run", "--over-budget"])
    assert shown.exit_code == 0 and "\nbudget: tiny-llama/full:" in shown.output, shown.output
    assert not db.exists()


# --------------------------------------------------------------------------- running it, and the page


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, tiny_model):
    """One study run through the CLI: two students x (full-alpaca, full),
    quiz as evaluation.benchmarks (the first student's runs first); then the
    second student alone in a fresh database, to count the teacher calls the
    study saved."""
    from tapir.cli import _add_commands, cli as group
    from tapir.plugins import get_plugin_manager, reset_plugin_manager

    tmp_path = tmp_path_factory.mktemp("study")
    reset_plugin_manager()
    pm = get_plugin_manager()
    pm.register(ScriptPlugin(), name="test-script")
    pm.register(QuizPlugin(), name="test-quiz")
    _add_commands()
    mp = pytest.MonkeyPatch()
    mp.setenv("TAPIR_QUIET", "1")
    try:
        data = _data(tmp_path, tiny_model, evaluation={"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 4},
                                                      "benchmarks": [{"name": "quiz"}]})
        other = _second(tmp_path, tiny_model)
        data["study"] = "backbones"
        first = data.pop("student")
        data["students"] = [first, {**first, "model": f"hf:{other}"}]
        db = tmp_path / "t.db"
        settings = ["--settings", "full-alpaca,full"]
        # the first backbone's runs of the study, then the whole study on the same database
        ScriptTeacher.calls = 0
        first_only = CliRunner().invoke(group, ["--db", str(db), "study", str(_write(
            tmp_path, dict(data, students=[first]), "first.yaml")), *settings])
        assert first_only.exit_code == 0, first_only.output
        calls = {"first": ScriptTeacher.calls}
        ScriptTeacher.calls = 0
        result = CliRunner().invoke(group, ["--db", str(db), "study", str(_write(tmp_path, data)), *settings])
        assert result.exit_code == 0, result.output
        calls["second"] = ScriptTeacher.calls
        # the second backbone alone, in a fresh database
        ScriptTeacher.calls = 0
        solo = CliRunner().invoke(group, ["--db", str(tmp_path / "solo.db"), "study", str(_write(
            tmp_path, dict(data, students=[data["students"][1]], study="alone"), "alone.yaml"))])
        assert solo.exit_code == 0, solo.output
        calls["alone"] = ScriptTeacher.calls
        yield {"db": db, "dir": tmp_path, "output": result.output, "calls": calls, "group": group, "other": other}
    finally:
        mp.undo()
        reset_plugin_manager()


def test_study_shares_what_does_not_read_the_axis(study_db, tiny_model):
    store = sqlite_utils.Database(study_db["db"])
    runs = [(r[0], json.loads(r[1])["study"]) for r in store.execute(
        "select name, config from runs where json_extract(config, '$.study') is not null order by created_at, id")]
    assert [(t["student"].split("/")[-1], t["setting"]) for _, t in runs] == [
        ("tiny-llama", "full-alpaca"), ("tiny-llama", "full"), ("tiny-2", "full-alpaca"), ("tiny-2", "full")]
    assert {t["name"] for _, t in runs} == {"backbones"}
    assert runs[0][0] == "backbones/tiny-llama/full-alpaca"
    for stage in ("ingest", "teacher_answers", "classify", "heldout_answers"):
        keys = {r[0] for r in store.execute("select key from stages where name = ? and round = 0", [stage])}
        assert len(keys) == 1, stage
    # one S0 per backbone, shared by its two settings
    assert store.execute("select count(distinct key) from stages where name = 'train' and round = 0"
                         ).fetchone()[0] == 2
    # The second backbone's first run took those stages from a run of the first backbone.
    ids = [r[0] for r in store.execute("select id from runs where json_extract(config, '$.study') is not null "
                                       "order by created_at, id")]
    rows = dict(store.execute("select name || ':' || round, reused_from from stages where run_id = ?", [ids[2]]))
    for node in ("ingest:0", "teacher_answers:0", "classify:0", "heldout_answers:0"):
        assert rows.get(node) in ids[:2], (node, rows)
    assert rows.get("train:0") is None  # its own S0
    # Teacher calls: the first backbone paid D's 16 answers and the 4 held-out answers; in the study the
    # second backbone paid at least those 20 fewer than alone (its full setting after full-alpaca: nothing).
    # (The second backbone is a copy of the first, so the LLM-call cache answers its other calls too.)
    calls = study_db["calls"]
    assert calls["first"] >= 16 + 4 and calls["alone"] >= 16 + 4
    assert calls["second"] <= calls["alone"] - (16 + 4)
    lines = study_db["output"].splitlines()
    row = next(x for x in lines if x.startswith("tiny-2 ") and " full " in x)
    assert row.split()[-1] == "0.5500"  # quiz on S2 of the second backbone (0.2 + 0.1 * 3 + 0.05)
    assert "report: tapir study-report backbones" in study_db["output"]


@pytest.fixture(scope="module")
def page(study_db):
    result = CliRunner().invoke(study_db["group"], ["--db", str(study_db["db"]), "study-report", "backbones",
                                                    "-o", str(study_db["dir"] / "study.html")])
    assert result.exit_code == 0, result.output
    return study_db["dir"] / "study.html"


def test_study_report_has_the_grids(page, study_db):
    from tapir.report import open_readonly
    from tapir.studyreport import build_study_report

    store = open_readonly(study_db["db"])
    built = build_study_report(store, "backbones")
    store.close()
    tables = {t.title: t for s in built.sections for t in s.tables}
    grid = tables["Backbones x benchmarks (Tables 2/3)"]
    assert grid.header[:2] == ["backbone", "model"] and "heldout-loss: heldout/nll" in grid.header
    quiz = grid.header.index("quiz: quiz/acc")
    cells = {(r[0], r[1]): r[quiz] for r in grid.rows}
    assert cells == {("tiny-llama", "base"): "0.2", ("tiny-llama", "TAPIR (full)"): "0.5",
                     ("tiny-2", "base"): "0.25", ("tiny-2", "TAPIR (full)"): "0.55"}
    settings = tables["tiny-2 (hf:" + str(study_db["other"]) + "): settings x benchmarks"]
    by = {r[0]: dict(zip(settings.header, r)) for r in settings.rows}
    assert by["full-alpaca"]["quiz: quiz/acc"] == "0.35" and by["full"]["quiz: quiz/acc"] == "0.55"
    assert by["full"]["optimizer steps"] == 2 and by["full-alpaca"]["optimizer steps"] == 1
    assert by["full"]["examples (setting)"] > by["full-alpaca"]["examples (setting)"] == 16
    assert by["full"]["tokens"] > 0
    sources = tables["Where each number comes from: judge and prompt template per benchmark run"]
    quiz_rows = [r for r in sources.rows if r[0] == "quiz"]
    assert {r[2] for r in quiz_rows} == {"quiz-judge"} and len(quiz_rows) == 8  # base, S0, S1, S2 per backbone
    assert "tiny-2 S2 (full-alpaca, full)" in {r[1] for r in quiz_rows}  # one checkpoint, both settings
    assert tables["Failed items by kind"].note == "no failed items"
    # Fig. 3 once per backbone; Figs. 5 and 6 per run, folded
    rounds = next(s for s in built.sections if s.id == "rounds")
    assert [f.title.split(":")[0] for f in rounds.figures] == ["tiny-llama", "tiny-2"]
    assert len(built.per_run) == 4
    html = page.read_text(encoding="utf-8")
    assert html.count("<details>") == 4 and "max-height:85vh" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained


CHECK = """<script>window.addEventListener('load', function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var im = [].slice.call(document.images);
  var ok = im.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var tall = im.filter(function (i) { return i.getBoundingClientRect().height > window.innerHeight; });
  var rows = [].slice.call(document.querySelectorAll('table')).map(function (t) {
    return t.tBodies.length ? t.tBodies[0].rows.length : 0; });
  document.body.setAttribute('data-images', String(im.length));
  document.body.setAttribute('data-images-ok', String(ok.length));
  document.body.setAttribute('data-too-tall', String(tall.length));
  document.body.setAttribute('data-tables', String(rows.length));
  document.body.setAttribute('data-checked', 'yes');
});</script>"""


def test_study_report_in_a_headless_browser(page, tmp_path):
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium, or set TAPIR_CHROMIUM)")
    check = tmp_path / "check.html"
    check.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--window-size=1200,900"]
    dom = subprocess.run([*args, "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:300]
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-checked") == "yes", attrs
    # Fig. 3 per backbone (2) + Figs. 5 and 6 per run (4 x 2), every one decoded, none taller than the window
    assert attrs["data-images"] == "10" and attrs["data-images-ok"] == "10", attrs
    assert attrs["data-too-tall"] == "0", attrs


def test_study_report_says_what_failed(study_db, tmp_path):
    from tapir.report import open_readonly
    from tapir.store import open_store
    from tapir.studyreport import build_study_report

    db = tmp_path / "t.db"
    shutil.copy(study_db["db"], db)
    store = open_store(db)
    run_id, = store.execute("select id from runs where name = 'backbones/tiny-2/full'").fetchone()
    key, = store.execute("select key from stages where run_id = ? and name = 'teacher_answers' and round = 1",
                         [run_id]).fetchone()
    item, = store.execute("select item_id from outcomes where scope = ? limit 1", [key]).fetchone()
    with store.db.conn:
        store.execute("update outcomes set status = 'failed', error_kind = 'rate_limit', reason = 'HTTP 429: slow "
                      "down' where scope = ? and item_id = ?", [key, item])
        store.execute("update runs set status = 'done_with_failures' where id = ?", [run_id])
    store.close()
    store = open_readonly(db)
    built = build_study_report(store, "backbones")
    store.close()
    tables = {t.title: t for s in built.sections for t in s.tables}
    runs = {(r[0], r[1]): r for r in tables["Runs"].rows}
    assert runs[("tiny-2", "full")][3] == "done_with_failures" and runs[("tiny-llama", "full")][3] == "done"
    failed = tables["Failed items by kind"]
    assert failed.note is None
    # the stage is shared by the backbone's two settings (one key): both runs show the failed item
    assert sorted(r[:6] for r in failed.rows) == [["tiny-2", s, "teacher_answers", 1, "rate_limit", 1]
                                                  for s in ("full", "full-alpaca")]
    assert {(r[6], r[7]) for r in failed.rows} == {(item, "HTTP 429: slow down")}


def test_compare_takes_the_study_name_and_labels_backbone_setting_round(study_db):
    result = CliRunner().invoke(study_db["group"], ["--db", str(study_db["db"]), "compare", "backbones"])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")][1:]
    # full-alpaca's result is S0 (its run trains the whole recipe, whose S1, S2 are full's)
    assert rows == [f"{b} · {label}" for b in ("tiny-2", "tiny-llama")
                    for label in ("base", "full · S1", "full · S2", "full-alpaca · S0")]
    quiz = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in result.output.splitlines()
            if line.startswith("| tiny")}
    assert quiz["tiny-llama · full · S2"] == "0.500 ± 0.010" and quiz["tiny-2 · base"] == "0.250 ± 0.010"
