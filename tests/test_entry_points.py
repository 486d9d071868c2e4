"""Entry-point discovery: the built-in plugins come through the ``tapir``
entry-point group, and a third-party package installed with pip (its own
pyproject.toml, built offline) is found by ``tapir plugins`` and used by
``tapir prompt``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

import pytest

import tapir

BUILTINS = {"hf", "litellm", "vllm", "judges", "trainers", "classifiers", "teachers", "mtbench", "alpacaeval", "lmeval"}

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tapir-myplug"
version = "0.3.1"
description = "A throwaway third-party tapir plugin"

[project.entry-points.tapir]
myplug = "tapir_myplug"

[tool.setuptools]
py-modules = ["tapir_myplug"]
"""

MODULE = '''\
"""A third-party tapir plugin: an echo backend and a length judge."""

from tapir import hookimpl
from tapir.options import Options, option
from tapir.roles import Completion, Judgment


class EchoBackend:
    class Options(Options):
        prefix: str = option("echo: ", "what every answer starts with")

    def __init__(self, name, options):
        self.model_id = f"echo:{name}"
        self.prefix = options.prefix

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            text = request.messages[-1]["content"]
            completion = Completion(text=f"{self.prefix}{text}", prompt_tokens=len(text.split()),
                                    completion_tokens=len(text.split()) + 1, cost=0.0)
            out.append(completion)
            if on_result:
                on_result(i, completion)
        return out


class LengthJudge:
    name = "echo-judge"
    kind = "pairwise"
    needs_model = False
    needs_student = False
    reads_student_answer = True

    class Options(Options):
        pass

    def __init__(self, backend, options):
        self.backend = backend

    def judge(self, requests):
        return [Judgment(score_a=len(r.answer_a), score_b=len(r.answer_b or "")) for r in requests]


@hookimpl
def register_backends(register):
    register("echo", EchoBackend, description="echoes the last user message")


@hookimpl
def register_judges(register):
    register("echo-judge", "tapir_myplug:LengthJudge", description="the longer answer wins")
'''


def tapir_command() -> list[str]:
    script = Path(sys.executable).with_name("tapir")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from tapir.cli import main; main()"]


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAPIR_PLUGINS", "TAPIR_TRACE_HOOKS", "TAPIR_DB")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """pip-install the throwaway plugin package into a target folder (offline)."""
    root = tmp_path_factory.mktemp("thirdparty")
    pkg = root / "tapir-myplug"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "tapir_myplug.py").write_text(MODULE)
    site = root / "site"
    if find_spec("setuptools") is None:  # pip cannot build offline here: install by hand, as a wheel would
        return install_by_hand(pkg, site)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--no-compile", "-q", "--target", str(site), str(pkg)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "tapir_myplug.py").is_file()
    assert list(site.glob("tapir_myplug-0.3.1.dist-info"))
    return site


def install_by_hand(pkg: Path, site: Path) -> Path:
    """What installing the wheel writes: the module and a dist-info folder
    with METADATA and entry_points.txt."""
    site.mkdir()
    (site / "tapir_myplug.py").write_text((pkg / "tapir_myplug.py").read_text())
    info = site / "tapir_myplug-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tapir-myplug\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[tapir]\nmyplug = tapir_myplug\n")
    (info / "RECORD").write_text("")
    return site


def run_tapir(args, site: Path | None, cwd: Path, **env):
    extra = {"PYTHONPATH": str(site)} if site else {}
    return subprocess.run(tapir_command() + list(args), capture_output=True, text=True, cwd=cwd,
                          env=clean_env(**extra, **env), timeout=120)


def test_builtin_plugins_come_through_entry_points(pm):
    declared = {ep.name: ep.value for ep in entry_points(group="tapir")}
    assert BUILTINS <= set(declared)
    for name in BUILTINS:
        assert declared[name] == f"tapir_{name}"
        info = pm.infos[name]
        assert info.module == f"tapir_{name}"
        assert info.version == tapir.__version__
        assert info.error is None, f"{name}: {info.error}"
        assert pm.has_plugin(name)
    assert "register_backends" in pm.infos["hf"].hooks
    assert "resolve_model" in pm.infos["litellm"].hooks


def test_third_party_plugin_is_listed(plugin_site, tmp_path):
    proc = run_tapir(["plugins", "--json"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    mine = rows["myplug"]
    assert mine["module"] == "tapir_myplug"
    assert mine["version"] == "0.3.1"
    assert mine["available"] is True and mine["error"] is None
    assert mine["hooks"] == ["register_backends", "register_judges"]
    assert mine["components"]["backends"] == [
        {"name": "echo", "available": True, "reason": None, "description": "echoes the last user message"}
    ]
    assert [c["name"] for c in mine["components"]["judges"]] == ["echo-judge"]
    assert BUILTINS <= set(rows)  # the built-ins still load beside it

    # Without the package on the path it is not there: discovery is real.
    proc = run_tapir(["plugins", "--json"], None, tmp_path)
    assert "myplug" not in {r["name"] for r in json.loads(proc.stdout)}


def test_third_party_backend_is_used_by_prompt(plugin_site, tmp_path):
    db = tmp_path / "calls.db"
    proc = run_tapir(["--db", str(db), "prompt", "hi there", "-m", "echo:x"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo: hi there\n"
    assert "llm_calls id 1" in proc.stderr

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select model, response, error, prompt_tokens, completion_tokens, messages from llm_calls"
        ).fetchall()
    assert len(rows) == 1
    model, response, error, pt, ct, messages = rows[0]
    assert (model, response, error, pt, ct) == ("echo:x", "echo: hi there", None, 2, 3)
    assert json.loads(messages) == [{"role": "user", "content": "hi there"}]

    again = run_tapir(["--db", str(db), "prompt", "hi there", "-m", "echo:x"], plugin_site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "echo: hi there\n"
    assert "cache" in again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from llm_calls").fetchone()[0] == 1
    assert not (tmp_path / "tapir.db").exists()  # --db was honoured


def test_third_party_judge_loads_lazily(plugin_site, tmp_path):
    code = textwrap.dedent("""
        from tapir.plugins import registry
        from tapir.roles import JudgeRequest
        comp = registry().get("judges", "echo-judge")
        assert comp.plugin == "myplug", comp.plugin
        (j,) = comp.create(None).judge([JudgeRequest("q", "short", "much longer")])
        print(j.score_a, j.score_b)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(plugin_site)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The judge class came through the "module:attr" string and works.
    assert proc.stdout.split() == ["5", "11"]
