"""The plugin engine: hooks, the registry, firstresult resolution,
check_pending, TAPIR_PLUGINS, TAPIR_TRACE_HOOKS, unavailable components and
plugins that fail to load."""

from __future__ import annotations

import json
import sys
import textwrap
from importlib.metadata import EntryPoint

import click
import pytest
from click.testing import CliRunner

from fakes import ScriptedBackend
from tapir import hookimpl, models
from tapir import plugins as plugins_mod
from tapir.errors import ConfigError, TapirError
from tapir.options import Options, option
from tapir.plugins import check_pending, get_plugin_manager, reset_plugin_manager

BUILTINS = {"hf", "litellm", "vllm", "judges", "trainers", "classifiers", "teachers", "mtbench", "alpacaeval", "lmeval"}


class DemoBench:
    class Options(Options):
        n: int = option(1, "how many")

    def __init__(self, options):
        self.options = options


class DemoPlugin:
    """Implements one hook of each kind the registry handles."""

    def __init__(self):
        self.resolved: list[str] = []

    @hookimpl
    def register_backends(self, register):
        register(
            "demo",
            lambda name, options: ScriptedBackend(lambda m: f"demo says {m[-1]['content']}", model_id=f"demo:{name}"),
            description="a demo backend",
        )

    @hookimpl
    def register_judges(self, register):
        # A lazy "module:attribute" factory: nothing is imported until load().
        register("demo-judge", "json:dumps", description="a lazily loaded judge")

    @hookimpl
    def register_evaluators(self, register):
        register("demo-bench", DemoBench)

    @hookimpl
    def register_commands(self, cli):
        @cli.command("demo-cmd")
        def demo_cmd():
            """A command added by a plugin."""
            click.echo("demo command ran")

    @hookimpl
    def resolve_model(self, model_id):
        self.resolved.append(model_id)
        if model_id.startswith("openai/"):
            return ("demo", model_id.split("/", 1)[1], {"via": "demo"})
        return None


@pytest.fixture
def env_pm(monkeypatch):
    """Build a plugin manager under an environment the test sets first."""

    def build(**env):
        for key, value in env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        reset_plugin_manager()
        return get_plugin_manager()

    monkeypatch.delenv("TAPIR_PLUGINS", raising=False)
    monkeypatch.delenv("TAPIR_TRACE_HOOKS", raising=False)
    yield build
    reset_plugin_manager()


# --- hooks and the registry ---------------------------------------------------


def test_registry_sees_each_hook_with_plugin_name(register_plugin, pm):
    register_plugin(DemoPlugin(), "demo-plugin")
    reg = pm.registry

    backend = reg.get("backends", "demo")
    assert backend.plugin == "demo-plugin"
    assert backend.role == "backends"
    assert backend.description == "a demo backend"
    made = backend.create("x")
    assert made.model_id == "demo:x"
    assert made.generate.__self__ is made  # a real backend object

    judge = reg.get("judges", "demo-judge")
    assert judge.plugin == "demo-plugin"
    assert judge.load() is json.dumps  # the lazy "module:attr" factory resolved
    with pytest.raises(TypeError):  # json.dumps declares no Options: it takes none
        judge.create({"b": 1, "a": 2}, options={})

    bench = reg.get("evaluators", "demo-bench")
    assert bench.plugin == "demo-plugin"
    assert bench.create(options={"n": 3}).options.n == 3
    with pytest.raises(ConfigError):
        bench.create(options={"m": 3})
    assert "demo" in reg.names("backends") and "demo-judge" in reg.names("judges")


def test_registry_is_rebuilt_after_register(pm):
    before = pm.registry
    assert "demo" not in before.names("backends")
    pm.register(DemoPlugin(), name="late")
    assert pm.registry is not before
    assert pm.registry.get("backends", "demo").plugin == "late"
    pm.unregister(name="late")
    assert "demo" not in pm.registry.names("backends")


def test_unknown_component_lists_what_is_available(register_plugin, pm):
    register_plugin(DemoPlugin(), "demo-plugin")
    with pytest.raises(TapirError) as exc:
        pm.registry.get("judges", "demo-judgee")
    assert "unknown judge 'demo-judgee'" in str(exc.value)
    assert "demo-judge" in str(exc.value).split("Available:")[1]


def test_register_commands_adds_a_cli_command(register_plugin):
    from tapir.cli import _add_commands, cli

    register_plugin(DemoPlugin(), "demo-plugin")
    try:
        _add_commands()
        assert "demo-cmd" in cli.commands
        result = CliRunner().invoke(cli, ["demo-cmd"])
        assert result.exit_code == 0, result.output
        assert result.output == "demo command ran\n"
        help_text = CliRunner().invoke(cli, ["--help"]).output
        assert "demo-cmd" in help_text
    finally:
        cli.commands.pop("demo-cmd", None)


# --- resolve_model: firstresult, litellm answers last ---------------------------


def test_litellm_resolves_provider_model_ids_last(pm):
    spec = models.resolve("openai/gpt-4o-mini")
    assert (spec.backend, spec.name) == ("litellm", "openai/gpt-4o-mini")


def test_plugin_answers_resolve_model_before_litellm(register_plugin, pm):
    demo = register_plugin(DemoPlugin(), "demo-plugin")
    assert pm.hook.resolve_model(model_id="openai/gpt-4o-mini") == ("demo", "gpt-4o-mini", {"via": "demo"})
    spec = models.resolve("openai/gpt-4o-mini", {"temperature_hint": 1})
    assert (spec.backend, spec.name) == ("demo", "gpt-4o-mini")
    assert spec.options == {"via": "demo", "temperature_hint": 1}  # caller's options win over the plugin's
    # A plugin that answers None passes the id on: litellm still gets it.
    assert models.resolve("anthropic/claude-x").backend == "litellm"
    assert "anthropic/claude-x" in demo.resolved


def test_backend_prefix_beats_resolve_model(register_plugin, pm):
    demo = register_plugin(DemoPlugin(), "demo-plugin")
    spec = models.resolve("demo:some/model")
    assert (spec.backend, spec.name, spec.options) == ("demo", "some/model", {})
    assert demo.resolved == []  # BACKEND:NAME never asks the hook


def test_unknown_model_id_lists_backends(pm):
    with pytest.raises(TapirError) as exc:
        models.resolve("just-a-name")
    msg = str(exc.value)
    assert "unknown model 'just-a-name'" in msg
    assert "hf" in msg.split("backend from:")[1]


# --- check_pending --------------------------------------------------------------


class Misspelled:
    @hookimpl
    def register_judgez(self, register):  # sic
        register("x", "json:dumps")


class OptionalExtra:
    @hookimpl(optionalhook=True)
    def register_something_new(self, register):
        pass


def test_misspelled_hook_raises_tapir_error_naming_it(register_plugin, pm):
    check_pending(pm)  # the built-ins are clean
    register_plugin(Misspelled(), "typo-plugin")
    with pytest.raises(TapirError) as exc:
        check_pending(pm)
    msg = str(exc.value)
    assert "'register_judgez'" in msg
    assert "'typo-plugin'" in msg
    assert "register_judges" in msg  # the known hooks are listed


def test_optional_hooks_pass_check_pending(register_plugin, pm):
    register_plugin(OptionalExtra(), "optional-plugin")
    check_pending(pm)  # no error


# --- TAPIR_PLUGINS and TAPIR_TRACE_HOOKS ----------------------------------------


def test_all_builtin_plugins_load_by_default(env_pm):
    pm = env_pm()
    assert BUILTINS <= set(pm.infos)
    assert {name for name, _ in pm.list_name_plugin()} >= BUILTINS


def test_tapir_plugins_limits_loading(env_pm):
    pm = env_pm(TAPIR_PLUGINS=" hf , judges ")
    assert set(pm.infos) == {"hf", "judges"}
    assert {name for name, _ in pm.list_name_plugin()} == {"hf", "judges"}
    assert pm.registry.names("backends") == ["hf"]
    with pytest.raises(TapirError) as exc:
        models.resolve("openai/gpt-4o-mini")  # litellm is not loaded
    assert "litellm plugin" in str(exc.value)


def test_tapir_plugins_typo_is_reported_not_silent(env_pm):
    pm = env_pm(TAPIR_PLUGINS="hf,litelm")
    assert not pm.has_plugin("litelm") and not pm.has_plugin("litellm")
    error = pm.infos["litelm"].error
    assert error.startswith("TAPIR_PLUGINS names 'litelm' but no installed package offers it")
    assert "litellm" in error.split("installed:")[1]  # the right name is in the list
    assert pm.infos["hf"].error is None


def test_tapir_plugins_empty_loads_none(env_pm):
    pm = env_pm(TAPIR_PLUGINS="")
    assert pm.infos == {}
    assert pm.list_name_plugin() == []
    assert all(pm.registry.names(role) == [] for role in plugins_mod.ROLES)


def test_trace_hooks_prints_calls_to_stderr(env_pm, capsys):
    pm = env_pm(TAPIR_PLUGINS="hf,litellm", TAPIR_TRACE_HOOKS="1")
    pm.registry
    assert pm.hook.resolve_model(model_id="openai/x") == ("litellm", "openai/x", {})
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "[tapir hook] register_backends(register) -> [hf]" in lines
    assert "[tapir hook] register_backends(register) -> [litellm]" in lines
    assert any(line.startswith("[tapir hook] resolve_model(model_id) -> [") for line in lines)
    assert "[tapir hook] resolve_model returned ('litellm', 'openai/x', {})" in lines


def test_no_trace_without_the_variable(env_pm, capsys):
    pm = env_pm(TAPIR_PLUGINS="hf,litellm")
    pm.registry
    pm.hook.resolve_model(model_id="openai/x")
    assert "[tapir hook]" not in capsys.readouterr().err


# --- unavailable components -----------------------------------------------------


class NeedsMissing:
    @hookimpl
    def register_backends(self, register):
        register("needy", "tapir_no_such_module_xyz:Backend", requires=("json", "tapir_no_such_module_xyz"),
                 extra="local", description="needs a module that is not installed")
        register("needy-dotted", "json:dumps", requires=("tapir_no_such_pkg_xyz.sub",))

    @hookimpl
    def register_judges(self, register):
        register("fine", "json:dumps", requires=("json",))


def test_component_with_missing_requirement_lists_unavailable(register_plugin, pm):
    register_plugin(NeedsMissing(), "needy-plugin")
    reg = pm.registry
    needy = reg.get("backends", "needy")
    assert needy.available is False
    assert needy.missing == ["tapir_no_such_module_xyz"]
    assert needy.reason == "needs tapir_no_such_module_xyz (pip install 'tapir-distill[local]')"
    with pytest.raises(TapirError) as exc:
        needy.create("x")
    assert str(exc.value) == f"backend 'needy' is unavailable: {needy.reason}"

    dotted = reg.get("backends", "needy-dotted")  # a dotted name whose parent is missing must not crash
    assert dotted.available is False
    assert dotted.reason == "needs tapir_no_such_pkg_xyz.sub (pip install tapir_no_such_pkg_xyz.sub)"

    fine = reg.get("judges", "fine")
    assert fine.available and fine.reason is None


def test_unavailable_component_shows_in_tapir_plugins(register_plugin):
    from tapir.cli import _add_commands, cli

    register_plugin(NeedsMissing(), "needy-plugin")
    _add_commands()
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    comps = {c["name"]: c for c in rows["needy-plugin"]["components"]["backends"]}
    assert comps["needy"]["available"] is False
    assert comps["needy"]["reason"] == "needs tapir_no_such_module_xyz (pip install 'tapir-distill[local]')"
    text = CliRunner().invoke(cli, ["plugins"]).stdout
    assert ("    backend    needy - needs a module that is not installed"
            "  [unavailable: needs tapir_no_such_module_xyz (pip install 'tapir-distill[local]')]") in text.splitlines()
    assert "needy-plugin  (" in text  # in-process plugins are listed too


# --- plugins that fail to load ---------------------------------------------------


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Point tapir's entry-point discovery at modules written in tmp_path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TAPIR_PLUGINS", raising=False)
    created: list[str] = []

    def make(modules: dict[str, str]):
        eps = []
        for name, source in modules.items():
            mod = f"tapir_test_{name.replace('-', '_')}"
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(source))
            created.append(mod)
            eps.append(EntryPoint(name=name, value=mod, group="tapir"))
        monkeypatch.setattr(plugins_mod, "entry_points", lambda group: eps if group == "tapir" else [])
        reset_plugin_manager()

    yield make
    reset_plugin_manager()
    for mod in created:
        sys.modules.pop(mod, None)


GOOD = """
from tapir import hookimpl

@hookimpl
def register_judges(register):
    register("good-judge", "json:dumps")
"""


def test_plugin_that_fails_to_import_is_listed_and_others_load(fake_entry_points):
    fake_entry_points({
        "broken": "raise ImportError('needs the frobnicator package')\n",
        "good": GOOD,
        "badsig": """
            from tapir import hookimpl

            @hookimpl
            def register_backends(registry):  # wrong argument name: pluggy rejects it
                pass
            """,
    })
    pm = get_plugin_manager()
    assert set(pm.infos) == {"broken", "good", "badsig"}
    assert pm.infos["broken"].error == "ImportError: needs the frobnicator package"
    assert pm.infos["badsig"].error.startswith("PluginValidationError:")
    assert "registry" in pm.infos["badsig"].error
    assert pm.infos["good"].error is None
    assert pm.infos["good"].hooks == ["register_judges"]
    assert pm.registry.get("judges", "good-judge").plugin == "good"
    assert not pm.has_plugin("broken") and not pm.has_plugin("badsig")

    from tapir.cli.plugins_cmd import plugin_rows

    rows = {r["name"]: r for r in plugin_rows()}
    assert rows["broken"]["available"] is False
    assert rows["broken"]["error"] == "ImportError: needs the frobnicator package"
    assert rows["good"]["available"] is True
    assert rows["good"]["components"] == {
        "judges": [{"name": "good-judge", "available": True, "reason": None, "description": ""}]
    }


def test_misspelled_hook_in_installed_plugin_stops_loading(fake_entry_points):
    fake_entry_points({
        "good": GOOD,
        "typo": """
            from tapir import hookimpl

            @hookimpl
            def register_judgez(register):
                pass
            """,
    })
    with pytest.raises(TapirError) as exc:
        get_plugin_manager()
    assert "plugin 'typo' implements unknown hook 'register_judgez'" in str(exc.value)


def test_register_hook_that_raises_is_listed_and_others_load(register_plugin, pm):
    from tapir.cli.plugins_cmd import plugin_rows

    class Broken:
        @hookimpl
        def register_judges(self, register):
            register("half", lambda backend, **o: None)
            raise RuntimeError("config file missing")

    register_plugin(Broken(), "broken-plugin")
    rows = {r["name"]: r for r in plugin_rows()}
    assert rows["broken-plugin"]["available"] is False
    assert rows["broken-plugin"]["error"] == "register_judges: RuntimeError: config file missing"
    assert "half" in pm.registry.by_role["judges"]  # what it registered before failing stays
    assert "pairwise" in pm.registry.by_role["judges"]  # the built-ins still load


def test_same_name_from_two_plugins_is_reported(register_plugin, pm):
    from tapir.cli.plugins_cmd import plugin_rows

    class Override:
        @hookimpl
        def register_judges(self, register):
            register("pairwise", lambda backend, **o: "mine")

    register_plugin(Override(), "my-judges")
    assert pm.registry.get("judges", "pairwise").plugin == "my-judges"
    assert ("judges", "pairwise", "judges", "my-judges") in pm.registry.overridden
    rows = {r["name"]: r for r in plugin_rows()}
    assert rows["my-judges"]["overrides"] == ["its judge 'pairwise' replaces judges's"]
