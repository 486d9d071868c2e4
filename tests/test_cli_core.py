"""The core CLI: --help, plugins, models, runs, prompt, clean errors, and
the guard against heavy imports at start-up."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner

import tapir
from fakes import ScriptedBackend
from tapir import hookimpl
from tapir.options import Options, option
from tapir.errors import TapirError
from tapir.runs import Run
from tapir.store import open_store

BUILTINS = {"hf", "litellm", "vllm", "judges", "trainers", "classifiers", "teachers", "mtbench", "alpacaeval", "lmeval"}
CORE_COMMANDS = {"plugins", "models", "prompt", "runs"}
HEAVY = ("torch", "transformers", "litellm", "vllm", "lm_eval", "numpy")


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAPIR_PLUGINS", "TAPIR_TRACE_HOOKS", "TAPIR_DB")}
    env.update(extra)
    return env


def tapir_command() -> list[str]:
    script = Path(sys.executable).with_name("tapir")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from tapir.cli import main; main()"]


def invoke(group, args, code=0, **kwargs):
    result = CliRunner().invoke(group, args, **kwargs)
    assert result.exit_code == code, (result.output, result.exception)
    return result


# --- help, version ---------------------------------------------------------------------


def test_help_lists_commands_real_script(tmp_path):
    proc = subprocess.run(tapir_command() + ["--help"], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: tapir [OPTIONS] COMMAND [ARGS]...")
    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert CORE_COMMANDS <= listed
    assert "--db TEXT" in proc.stdout
    assert proc.stderr == ""
    assert not (tmp_path / "tapir.db").exists()  # --help writes nothing


def test_version(cli):
    assert invoke(cli, ["--version"]).output == f"tapir, version {tapir.__version__}\n"


# --- plugins and models ------------------------------------------------------------------


def test_plugins_table(cli):
    out = invoke(cli, ["plugins"]).stdout
    lines = out.splitlines()
    assert f"hf {tapir.__version__}  (tapir_hf)  ok" in lines
    assert f"litellm {tapir.__version__}  (tapir_litellm)  ok" in lines
    assert any(line.startswith("    backend    hf - local transformers") for line in lines)
    assert any(line.startswith("    model      smollm2-135m-instruct") for line in lines)


def test_plugins_json(cli):
    rows = json.loads(invoke(cli, ["plugins", "--json"]).stdout)
    by_name = {r["name"]: r for r in rows}
    assert BUILTINS <= set(by_name)
    for row in rows:
        assert set(row) == {"name", "module", "version", "hooks", "available", "error", "components", "overrides"}
    hf = by_name["hf"]
    assert hf["available"] is True and hf["error"] is None
    assert "register_backends" in hf["hooks"]
    assert [c["name"] for c in hf["components"]["backends"]] == ["hf"]
    assert by_name["litellm"]["components"]["backends"][0]["name"] == "litellm"
    vllm = by_name["vllm"]["components"]["backends"][0]
    if find_spec("vllm") is None:
        assert vllm["available"] is False
        assert vllm["reason"] == "needs vllm (pip install 'tapir-distill[vllm]')"


def test_models(cli):
    out = invoke(cli, ["models"]).stdout
    assert out.startswith("Named models:\n")
    line = next(line for line in out.splitlines() if line.startswith("  smollm2-135m-instruct "))
    assert line.split()[1].startswith("hf:")  # the embedded default is served by the hf backend
    assert "Backends (any model id as BACKEND:NAME):" in out
    data = json.loads(invoke(cli, ["models", "--json"]).stdout)
    named = {m["id"]: m for m in data["models"]}
    assert named["smollm2-135m-instruct"]["backend"] == "hf"
    assert named["smollm2-135m-instruct"]["plugin"] == "hf"
    backends = {b["name"]: b for b in data["backends"]}
    assert {"hf", "litellm", "vllm"} <= set(backends)
    assert backends["litellm"]["plugin"] == "litellm"


# --- runs ---------------------------------------------------------------------------------


def test_runs_on_an_empty_db(cli, tmp_path):
    db = tmp_path / "empty.db"
    from tapir.store import open_store

    open_store(db).close()
    assert invoke(cli, ["--db", str(db), "runs"]).stdout == f"no runs in {db}\n"
    assert json.loads(invoke(cli, ["--db", str(db), "runs", "--json"]).stdout) == []


def test_runs_lists_runs_and_stages(cli, tmp_path):
    db = tmp_path / "runs.db"
    store = open_store(db)
    run = Run.start(store, {"name": "demo"}, name="demo-run")
    run.step("seed", lambda info: None)
    with pytest.raises(RuntimeError):
        run.step("judge", lambda info: (_ for _ in ()).throw(RuntimeError("x")), round=1)
    store.close()
    out = invoke(cli, ["--db", str(db), "runs"]).stdout.splitlines()
    assert out[0].startswith(f"{run.id}  demo-run  running  ")
    assert out[1].startswith("    seed                     round 0  done")
    assert out[2].startswith("    judge                    round 1  failed")
    data = json.loads(invoke(cli, ["--db", str(db), "runs", "--json"]).stdout)
    assert [r["id"] for r in data] == [run.id]
    assert [(s["name"], s["status"]) for s in data[0]["stages"]] == [("seed", "done"), ("judge", "failed")]


# --- errors ---------------------------------------------------------------------------------


class FailingCommand:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("fail-clean")
        def fail_clean():
            raise TapirError("the judge model 'x' is not served here; try tapir models")

        @cli.group("grp")
        def grp():
            pass

        @grp.command("deep")
        def deep():
            raise TapirError("deep failure")


def test_tapir_error_is_a_clean_message(register_plugin, cli):
    register_plugin(FailingCommand(), "failing")
    from tapir.cli import _add_commands

    _add_commands()
    result = invoke(cli, ["fail-clean"], code=1)
    assert result.stderr == "Error: the judge model 'x' is not served here; try tapir models\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output
    # A TapirError from a subcommand of a plugin's group is clean too.
    assert invoke(cli, ["grp", "deep"], code=1).stderr == "Error: deep failure\n"


def test_unknown_model_via_real_script_is_clean_and_writes_nothing(tmp_path):
    proc = subprocess.run(tapir_command() + ["prompt", "hi", "-m", "nosuchbackend:foo"], capture_output=True,
                          text=True, cwd=tmp_path, env=clean_env(), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: unknown model 'nosuchbackend:foo'.")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no tapir.db


def test_plugin_load_error_is_clean(monkeypatch, tmp_path, capsys):
    """A misspelled hook in an installed plugin: one message, exit 1."""
    from importlib.metadata import EntryPoint

    from tapir import plugins as plugins_mod
    from tapir.cli import main
    from tapir.plugins import reset_plugin_manager

    (tmp_path / "tapir_test_typo_cli.py").write_text(textwrap.dedent("""
        from tapir import hookimpl

        @hookimpl
        def register_judgez(register):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TAPIR_PLUGINS", raising=False)
    monkeypatch.setattr(plugins_mod, "entry_points",
                        lambda group: [EntryPoint(name="typo", value="tapir_test_typo_cli", group="tapir")])
    reset_plugin_manager()
    try:
        with pytest.raises(SystemExit) as exc:
            main(["--help"])
    finally:
        reset_plugin_manager()
        sys.modules.pop("tapir_test_typo_cli", None)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: plugin 'typo' implements unknown hook 'register_judgez' (misspelled?).")


# --- prompt through the cache -------------------------------------------------------------


class DepthOptions(Options):
    depth: int | None = option(None, "a backend option, echoed in the reply")


class ScriptedPlugin:
    def __init__(self):
        self.backends: list[ScriptedBackend] = []

    @hookimpl
    def register_backends(self, register):
        def factory(name, options):
            backend = ScriptedBackend(
                lambda messages: f"[{name}] {' | '.join(m['content'] for m in messages)} "
                                 f"{options.model_dump(exclude_none=True)}".strip(),
                model_id=f"scripted:{name}",
            )
            self.backends.append(backend)
            return backend

        factory.Options = DepthOptions
        register("scripted", factory, description="test backend")


def test_prompt_records_the_call_then_serves_it_from_cache(register_plugin, cli, tmp_path):
    plugin = register_plugin(ScriptedPlugin(), "scripted-plugin")
    db = tmp_path / "prompt.db"
    first = invoke(cli, ["--db", str(db), "prompt", "hello", "-m", "scripted:x", "--system", "be brief"])
    assert first.stdout == "[x] be brief | hello {}\n"
    assert first.stderr.startswith("[scripted:x, ")
    assert f"llm_calls id 1 in {db}]" in first.stderr
    assert "cache" not in first.stderr

    second = invoke(cli, ["--db", str(db), "prompt", "hello", "-m", "scripted:x", "--system", "be brief"])
    assert second.stdout == first.stdout
    assert second.stderr == f"[scripted:x, cache, llm_calls id 1 in {db}]\n"
    assert [len(b.requests) for b in plugin.backends] == [1, 0]  # the second backend was never asked

    # Another sample index, temperature or option is another call.
    invoke(cli, ["--db", str(db), "prompt", "hello", "-m", "scripted:x", "--system", "be brief", "--sample", "1"])
    third = invoke(cli, ["--db", str(db), "prompt", "hello", "-m", "scripted:x", "-o", "depth=3"])
    assert third.stdout == "[x] hello {'depth': 3}\n"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select model, sample, response, error from llm_calls order by id").fetchall()
    assert rows == [
        ("scripted:x", 0, "[x] be brief | hello {}", None),
        ("scripted:x", 1, "[x] be brief | hello {}", None),
        ("scripted:x", 0, "[x] hello {'depth': 3}", None),
    ]


def test_prompt_bad_option_is_an_error_and_writes_nothing(register_plugin, cli, tmp_path):
    register_plugin(ScriptedPlugin(), "scripted-plugin")
    result = invoke(cli, ["--db", str(tmp_path / "x.db"), "prompt", "hi", "-m", "scripted:x", "-o", "nokey"], code=1)
    assert "option 'nokey' is not KEY=VALUE" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_prompt_backend_error_exits_non_zero(register_plugin, cli, tmp_path):
    from tapir.roles import Completion

    class Failing:
        @hookimpl
        def register_backends(self, register):
            register("down", lambda name, o: ScriptedBackend(lambda m: Completion(error="APIConnectionError: down"),
                                                               model_id=f"down:{name}"))

    register_plugin(Failing(), "failing-backend")
    db = tmp_path / "down.db"
    result = invoke(cli, ["--db", str(db), "prompt", "hi", "-m", "down:x"], code=1)
    assert result.stderr == "Error: down:x failed: APIConnectionError: down\n"
    with sqlite3.connect(db) as conn:  # the failed call is recorded, with its error
        assert conn.execute("select response, error from llm_calls").fetchall() == [(None, "APIConnectionError: down")]


# --- no heavy imports at start-up ----------------------------------------------------------

HEAVY_CHECK = textwrap.dedent(f"""
    import sys, json
    import tapir.cli
    from tapir.cli import _add_commands, main
    from tapir.plugins import get_plugin_manager
    from tapir.cli.plugins_cmd import plugin_rows
    pm = get_plugin_manager()
    _add_commands()
    rows = plugin_rows()                      # every component's availability
    for args in (["--help"], ["plugins"], ["models", "--json"]):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None), (args, exc.code)
    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
    print(json.dumps({{"heavy": heavy, "plugins": sorted(pm.infos)}}))
""")


def test_startup_imports_nothing_heavy(tmp_path):
    proc = subprocess.run([sys.executable, "-c", HEAVY_CHECK], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert BUILTINS <= set(result["plugins"])  # all plugins were loaded
    assert result["heavy"] == [], f"imported at start-up: {result['heavy']}"


@pytest.mark.parametrize("args, message", [
    (["", "-m", "scripted:x"], "the question is empty"),
    (["  \n", "-m", "scripted:x"], "the question is empty"),
    (["hi", "-m", "scripted:x", "--max-new-tokens", "0"],
     "Invalid value for '--max-new-tokens': 0 is not in the range x>=1"),
    (["hi", "-m", "scripted:x", "--temperature", "-1"],
     "Invalid value for '--temperature': -1.0 is not in the range x>=0.0"),
    (["hi", "-m", "scripted:x", "--sample", "-2"], "Invalid value for '--sample': -2 is not in the range x>=0"),
])
def test_prompt_bad_question_or_sampling_is_refused_before_any_call(register_plugin, cli, tmp_path, args, message):
    """An empty question or a negative length, temperature or sample index
    was sent to the model (and the call recorded)."""
    register_plugin(ScriptedPlugin(), "scripted-plugin")
    result = invoke(cli, ["--db", str(tmp_path / "x.db"), "prompt", *args], code=2)
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x.db").exists()
