"""Capabilities, not probes (issue 18 item 3): what a component offers beyond
its role is declared in tapir.roles, checked once when the plugin registers
it, and the core asks the registry's record, never the class; the core
names no built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tapir import hookimpl
from tapir.roles import CAPABILITIES, FLAGS, CallEstimate

CORE = Path(__file__).resolve().parents[1] / "tapir"


# --- registration checks the capabilities once ------------------------------------------------


class GoodBackend:
    local_weights = False
    trainable = False

    @classmethod
    def missing_credentials(cls, model_name, options):
        return ["MY_TOKEN"] if model_name == "locked" else []

    @staticmethod
    def price(model_name, tokens_in, tokens_out):
        return tokens_in * 0.001 + tokens_out * 0.002

    def __init__(self, model_name, options):
        self.model_id = model_name


class TooFewParameters:
    @classmethod
    def price(cls, model_name):  # the protocol passes (model_name, tokens_in, tokens_out)
        return 0.0


class InstanceMethod:
    def missing_credentials(self, model_name, options):  # asked of the class: must not need an instance
        return []


class StringFlag:
    needs_model = "yes"


def test_capabilities_and_flags_are_recorded_at_registration(register_plugin, pm):
    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("good", GoodBackend)

    register_plugin(Plugin(), "good-plugin")
    component = pm.registry.get("backends", "good")
    assert component.capabilities == frozenset({"missing_credentials", "price"})
    assert component.flags == {"local_weights": False, "trainable": False}
    assert component.capability("price")("m", 1000, 500) == pytest.approx(2.0)


@pytest.mark.parametrize("role, factory, wanted", [
    ("backends", TooFewParameters, "price must be a classmethod or staticmethod called as "
                                   "price(model_name, tokens_in, tokens_out) (tapir.roles.Priced)"),
    ("backends", InstanceMethod, "missing_credentials must be a classmethod or staticmethod called as "
                                 "missing_credentials(model_name, options)"),
    ("judges", StringFlag, "whose 'needs_model' is str 'yes': it must be a class attribute True or False"),
])
def test_a_wrong_capability_is_refused_at_registration_naming_the_plugin(register_plugin, pm, role, factory,
                                                                         wanted):
    from tapir.cli.plugins_cmd import plugin_rows

    class Plugin:
        pass

    def hook(register):
        register("bad-one", factory)
        register("fine-one", GoodBackend if role == "backends" else type("J", (), {"needs_model": False}))

    setattr(Plugin, f"register_{role}", staticmethod(hookimpl(hook)))
    register_plugin(Plugin(), "shaky-plugin")
    registry = pm.registry
    assert "bad-one" not in registry.by_role[role]  # refused
    assert "fine-one" in registry.by_role[role]  # its other components still register
    error = registry.errors["shaky-plugin"]
    assert error.startswith(f"register_{role}: plugin 'shaky-plugin' registered {role[:-1]} 'bad-one'")
    assert wanted in error
    rows = {r["name"]: r for r in plugin_rows()}
    assert rows["shaky-plugin"]["available"] is False and rows["shaky-plugin"]["error"] == error


def test_a_component_without_a_capability_is_asked_nothing(register_plugin, pm):
    from tapir.bench import missing_credentials
    from tapir.errors import TapirError

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("plain", type("Plain", (), {"__init__": lambda self, name, options: None}))
            register("good", GoodBackend)

    register_plugin(Plugin(), "p")
    assert missing_credentials("plain", "anything", {}) == []
    assert missing_credentials("good", "locked", {}) == ["MY_TOKEN"]
    with pytest.raises(TapirError, match="backend 'plain' \\(p\\) does not offer price"):
        pm.registry.get("backends", "plain").capability("price")


def test_builtin_capabilities(pm):
    registry = pm.registry
    offered = {(role, name): registry.get(role, name).capabilities
               for role in CAPABILITIES for name in registry.names(role)}
    assert offered[("backends", "litellm")] == {"missing_credentials", "price", "served_at"}
    assert offered[("backends", "hf")] == {"tokenizer_file"} and offered[("backends", "vllm")] == frozenset()
    assert offered[("judges", "pairwise")] == {"estimate", "generation"}
    assert offered[("judges", "mtbench-single")] == offered[("judges", "preference")] == {"generation"}
    assert offered[("judges", "reference-similarity")] == offered[("judges", "student-loss")] == frozenset()
    assert offered[("classifiers", "llm")] == {"generation", "input_problems"}
    assert offered[("classifiers", "centroid")] == offered[("classifiers", "encoder")] == {"input_problems"}
    assert offered[("rewriters", "task-aware")] == {"estimate", "answered_by"}
    assert offered[("trainers", "hf")] == offered[("trainers", "trl")] == {"steps_for", "max_length"}
    assert registry.get("backends", "hf").flags == {"local_weights": True, "trainable": True}
    assert registry.get("backends", "vllm").flags == {"local_weights": True, "trainable": False}
    for name in registry.names("judges"):
        assert set(registry.get("judges", name).flags) == set(FLAGS["judges"]), name
    assert registry.errors == {}


def test_litellm_price_and_credentials_come_from_the_plugin(pm, monkeypatch):
    from tapir.bench import missing_credentials
    from tapir.capabilities import price

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_KEY", raising=False)
    assert missing_credentials("litellm", "openai/gpt-4o-mini", {}) == ["OPENAI_API_KEY"]
    assert missing_credentials("litellm", "openai/gpt-4o-mini", {"api_key_env": "MY_KEY"}) == ["MY_KEY"]
    # a self-hosted OpenAI-compatible server needs no key
    assert missing_credentials("litellm", "openai/m", {"api_base": "http://127.0.0.1:9/v1"}) == []
    import litellm

    entry = litellm.model_cost["gpt-4o-mini"]
    want = 1000 * entry["input_cost_per_token"] + 100 * entry["output_cost_per_token"]
    assert price("openai/gpt-4o-mini", 1000, 100) == pytest.approx(want)
    assert price("openai/no-such-model-xyz", 1000, 100) is None
    assert price("hf:org/name", 1000, 100) is None  # the hf backend prices nothing


def test_estimates_of_the_pairwise_judge_and_the_rewriter(pm):
    from tapir.capabilities import estimate

    default = CallEstimate("judge", 10, 0)
    assert estimate("judges", "pairwise", {}, "judge", 10, 50, default) == [CallEstimate("judge", 20, 400)]
    assert estimate("judges", "pairwise", {"both_orders": False}, "judge", 10, 50, default) == [
        CallEstimate("judge", 10, 400)]
    assert estimate("judges", "pairwise", {"judge_repeats": 3, "params": {"temperature": 0.7}}, "judge", 10, 50,
                    default)[0].calls == 60
    assert estimate("judges", "mtbench-single", {}, "judge", 10, 50, default) == [default]
    rewrite = CallEstimate("rewriter", 4, 100)
    assert estimate("rewriters", "task-aware", {}, "rewrite", 4, 50, rewrite) == [
        CallEstimate("rewriter", 4, 650), CallEstimate("teacher", 4, 130)]
    assert estimate("rewriters", "task-aware", {"mode": "polish-answer"}, "rewrite", 4, 50, rewrite) == [
        CallEstimate("rewriter", 4, 100)]


def test_trainer_steps_for(pm):
    trainer = pm.registry.get("trainers", "hf")
    options = trainer.options_model()
    steps_for = trainer.capability("steps_for")
    assert steps_for(options(total_batch_size=32, num_train_epochs=3), 100) == 4 * 3
    assert steps_for(options(total_batch_size=32, num_train_epochs=1.5, max_steps=7), 100) == 7
    assert steps_for(options(per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             num_train_epochs=1), 20) == 3


# --- start-up: registering the built-ins imports none of their modules ----------------------------


def test_building_the_registry_imports_no_builtin_factory_module(tmp_path):
    """The built-ins declare their flags and name a small capabilities module
    in register(...), so the check at registration imports no factory."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "import tapir.plugins as p\n"
        "r = p.registry()\n"
        "comps = [c for t in r.by_role.values() for c in t.values() if c.role != 'models']\n"
        "modules = {c.factory.partition(':')[0] for c in comps if isinstance(c.factory, str)}\n"
        "print(json.dumps({'factories': sorted(modules), 'imported': sorted(modules & set(sys.modules)),\n"
        "                  'plugin_modules': sorted(m for m in sys.modules if m.startswith('tapir_')),\n"
        "                  'offered': sorted(f'{c.role}/{c.name}' for c in comps if c.capabilities or c.flags),\n"
        "                  'errors': r.errors}))\n")
    env = {k: v for k, v in os.environ.items() if k != "TAPIR_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120, check=True)
    found = json.loads(out.stdout)
    assert {"tapir_judges.pairwise", "tapir_hf.backend", "tapir_trainers.hf_trainer",
            "tapir_teachers.rewriter", "tapir_litellm.backend"} <= set(found["factories"])
    assert found["imported"] == []
    assert found["errors"] == {}
    # Only the plugins' own packages and their capabilities modules.
    assert all(m.count(".") == 0 or m.endswith(".capabilities") for m in found["plugin_modules"]), found
    # Not vacuous: what the registry knows came from the declarations.
    assert {"judges/pairwise", "trainers/hf", "rewriters/task-aware", "backends/hf", "classifiers/llm"} <= set(
        found["offered"])


def test_the_builtins_declarations_say_what_their_classes_offer(pm):
    """A declaration must not drift from its class: the shape check of the
    factory itself (as for a plugin that declares nothing) finds the same
    flags, and no capability the declaration leaves out."""
    from dataclasses import replace

    from tapir.plugins import _offered

    checked = 0
    for role, table in pm.registry.by_role.items():
        for name, component in table.items():
            if role == "models" or not component.plugin.startswith(("hf", "litellm", "vllm", "judges",
                                                                     "classifiers", "teachers", "trainers")):
                continue
            on_class, flags = _offered(replace(component, provider=None))
            assert flags == component.flags, (role, name)
            # The declaration hides nothing the class has (litellm's price lives in its module only).
            assert on_class <= component.capabilities, (role, name)
            checked += 1
    assert checked >= 14


class Unimportable:
    """A factory that must not be imported: a lazy reference to a module that does not exist."""

    ref = "tapir_no_such_module.judge:Judge"


def test_declared_flags_and_no_capabilities_import_nothing(register_plugin, pm):
    class Plugin:
        @hookimpl
        def register_judges(self, register):
            register("declared", Unimportable.ref, flags={"needs_model": False, "reads_student_answer": True},
                     capabilities=())
            register("undeclared", Unimportable.ref)  # its shape check cannot import it: it offers nothing

    register_plugin(Plugin(), "lazy-plugin")
    registry = pm.registry
    assert registry.get("judges", "declared").flags == {"needs_model": False, "reads_student_answer": True}
    assert registry.get("judges", "declared").capabilities == frozenset()
    assert registry.get("judges", "undeclared").flags == {}
    assert registry.errors == {}


@pytest.mark.parametrize("declared, wanted", [
    ({"flags": {"needs_modle": True}}, "registered judge 'bad' with an unknown flag 'needs_modle' (flags of judges: "
                                       "needs_model, needs_student, reads_student_answer; tapir.roles.FLAGS)"),
    ({"flags": {"needs_model": "yes"}}, "registered judge 'bad' whose 'needs_model' is str 'yes': it must be a flag "
                                        "declared True or False"),
    ({"flags": {}, "capabilities": "tests_no_such_provider"}, None),  # a provider that cannot be imported: nothing
    ({"flags": {}, "capabilities": TooFewParameters}, None),  # judges' estimate: a backend's price is not looked at
])
def test_a_wrong_declaration_is_refused_naming_the_plugin(register_plugin, pm, declared, wanted):
    class Plugin:
        @hookimpl
        def register_judges(self, register):
            register("bad", Unimportable.ref, **declared)

    register_plugin(Plugin(), "declaring-plugin")
    registry = pm.registry
    if wanted is None:
        assert registry.get("judges", "bad").capabilities == frozenset() and registry.errors == {}
        return
    assert "bad" not in registry.by_role["judges"]
    assert registry.errors["declaring-plugin"].startswith("register_judges: plugin 'declaring-plugin' ")
    assert wanted in registry.errors["declaring-plugin"]


def test_a_named_provider_is_shape_checked_like_a_factory(register_plugin, pm):
    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("bad-provider", Unimportable.ref, flags={}, capabilities=TooFewParameters)
            register("good-provider", Unimportable.ref, flags={"local_weights": True}, capabilities=GoodBackend)

        @hookimpl
        def register_teachers(self, register):
            register("teacher", Unimportable.ref, capabilities=GoodBackend)  # teachers have no capabilities

    register_plugin(Plugin(), "provider-plugin")
    registry = pm.registry
    assert "bad-provider" not in registry.by_role["backends"]
    assert "price must be a classmethod or staticmethod" in registry.errors["provider-plugin"]
    assert "registered teacher 'teacher' with capabilities, but teachers have none" in registry.errors[
        "provider-plugin"]
    good = registry.get("backends", "good-provider")
    assert good.capabilities == {"missing_credentials", "price"} and good.flags == {"local_weights": True}


def test_how_a_judge_or_classifier_samples_is_its_generation_capability(register_plugin, pm):
    """The dry run's reply lengths and the judge stage's 'greedy replies
    repeat' read the component's generation with its options, instead of
    reading a 'params' option by name."""
    from tapir.capabilities import generation

    pairwise = generation("judges", "pairwise", {})
    assert (pairwise.max_new_tokens, pairwise.temperature, pairwise.top_logprobs) == (512, 0.0, 0)
    assert generation("judges", "pairwise", {"score_only": True}).max_new_tokens == 24
    sampled = generation("judges", "pairwise", {"judge_repeats": 3, "params": {"temperature": 0.7}})
    assert sampled.temperature == 0.7 and sampled.max_new_tokens == 512
    assert generation("judges", "mtbench-single", {"judge_mode": "reference"}).max_new_tokens == 2048
    assert generation("judges", "preference", {}).max_new_tokens == 1
    assert generation("classifiers", "llm", {"prompt": "table6"}).max_new_tokens == 256
    assert generation("judges", "pairwise", {"params": {"temprature": 1}}) is None  # preflight reports the typo
    assert generation("judges", "reference-similarity", {}) is None  # makes no call

    class Silent:  # a third-party judge that does not say: planned at its model's length, taken as greedy
        needs_model = True

    class Plugin:
        @hookimpl
        def register_judges(self, register):
            register("silent", Silent)

    register_plugin(Plugin(), "third-party")
    assert pm.registry.get("judges", "silent").capabilities == frozenset()
    assert generation("judges", "silent", {}) is None


def test_a_launched_student_server_is_named_to_the_backend_by_its_capability(register_plugin, pm):
    """student.serve.launch: the backend is told where the servers are by its
    served_at capability (the litellm backend: api_base / api_bases), not by
    the core writing litellm's option names; a backend without it is refused
    before anything runs."""
    from types import SimpleNamespace

    from tapir.pipeline.preflight import launch_problems
    from tapir.pipeline.serving import served_component

    served_at = served_component("openai/student", {}).capability("served_at")
    assert served_at({"concurrency": 2}, ["http://a/v1"]) == {"concurrency": 2, "api_base": "http://a/v1"}
    assert served_at({}, ["http://a/v1", "http://b/v1"]) == {"api_bases": ["http://a/v1", "http://b/v1"]}
    assert served_at({"api_base": "http://mine/v1"}, ["http://a/v1"]) == {"api_base": "http://mine/v1"}

    class Unservable:
        def __init__(self, model_name, options):
            self.model_id = model_name

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("unservable", Unservable)

    register_plugin(Plugin(), "third-party")
    serve = SimpleNamespace(model="unservable:{checkpoint}", options={})
    assert launch_problems(serve, "c.yaml: 'student.serve.model'") == [
        "c.yaml: 'student.serve.model': student.serve.launch starts a server, but backend 'unservable' "
        "(third-party) of 'unservable:{checkpoint}' cannot be sent to one (it has no served_at capability): serve "
        "an OpenAI-compatible model id, e.g. openai/NAME, or drop launch"]
    assert launch_problems(SimpleNamespace(model="openai/student", options={}), "w") == []
    assert launch_problems(SimpleNamespace(model="nosuch:thing", options={}), "w") == []  # reported with the model


def test_the_student_tokenizer_is_found_by_its_backends_capability(register_plugin, pm, tmp_path):
    """The row-length check counts tokens with the tokenizer.json the
    student's backend points at (the hf backend: its folder, or the hub
    cache at options.revision), never reading a backend option itself."""
    from tapir.pipeline.rowfit import token_counter, tokenizer_file

    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert tokenizer_file(f"hf:{folder}", {}) is None  # no tokenizer.json: the bytes bound
    assert token_counter(f"hf:{folder}", {})[1] == "bytes"
    (folder / "tokenizer.json").write_text("{}")
    assert tokenizer_file(f"hf:{folder}", {}) == folder / "tokenizer.json"
    assert tokenizer_file("hf:org-not-cached/model-not-cached", {"revision": "main"}) is None

    class Opaque:  # a third-party local backend that does not say where its tokenizer is
        local_weights = True
        trainable = True

        def __init__(self, model_name, options):
            self.model_id = model_name

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("opaque", Opaque)

    register_plugin(Plugin(), "third-party")
    assert tokenizer_file(f"opaque:{folder}", {}) is None
    assert token_counter(f"opaque:{folder}", {})[1] == "bytes"


def _section(name, **options):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, options=options)


def test_who_answers_a_rewritten_item_is_the_rewriters_capability(register_plugin, pm):
    """The rewrite stage asks the rewriter whose model answers (it decides
    which model's greedy replies repeat), instead of reading its 'mode'."""
    from tapir.errors import TapirError
    from tapir.pipeline.stages.rewrite import answered_by

    assert answered_by(_section("task-aware")) == "teacher"
    assert answered_by(_section("task-aware", mode="refine-instruction")) == "teacher"
    assert answered_by(_section("task-aware", mode="polish-answer")) == "rewriter"

    class Plain:  # a third-party rewriter that says nothing: the teacher answers (tapir.roles.Answering)
        pass

    class SelfAnswering:
        @staticmethod
        def answered_by(options):
            return "rewriter"

    class Confused:
        @classmethod
        def answered_by(cls, options):
            return "the judge"

    class Plugin:
        @hookimpl
        def register_rewriters(self, register):
            register("plain", Plain)
            register("self-answering", SelfAnswering)
            register("confused", Confused)

    register_plugin(Plugin(), "third-party")
    assert pm.registry.get("rewriters", "plain").capabilities == frozenset()
    assert answered_by(_section("plain", mode="polish-answer")) == "teacher"  # its options are its own
    assert answered_by(_section("self-answering")) == "rewriter"
    with pytest.raises(TapirError, match="rewriter 'confused' \\(third-party\\) says its items are answered by "
                                         "'the judge'; answered_by must return one of teacher, rewriter"):
        answered_by(_section("confused"))


def test_the_rows_length_check_reads_the_trainers_max_length_capability(register_plugin, pm):
    from types import SimpleNamespace

    from tapir.pipeline.rowfit import trainer_max_length

    def config(name, **options):
        return SimpleNamespace(trainer=_section(name, **options))

    assert trainer_max_length(config("hf")) == 2048  # the built-ins' default
    assert trainer_max_length(config("hf", max_length=64)) == 64
    assert trainer_max_length(config("trl", max_length=96)) == 96
    assert trainer_max_length(config("hf", max_length="many")) is None  # preflight reports the option

    class Unbounded:  # a third-party trainer without the capability: no row is checked before the run
        pass

    class Bounded:
        @classmethod
        def max_length(cls, options):
            return 10

    class Plugin:
        @hookimpl
        def register_trainers(self, register):
            register("unbounded", Unbounded)
            register("bounded", Bounded)

    register_plugin(Plugin(), "third-party")
    assert pm.registry.get("trainers", "unbounded").capabilities == frozenset()
    assert trainer_max_length(config("unbounded")) is None
    assert trainer_max_length(config("bounded")) == 10
    assert trainer_max_length(config("no-such-trainer")) is None


# --- the core names no built-in plugin ------------------------------------------------------------
#
# The rule: code in tapir/ never decides by a built-in plugin's name. It may
# not compare a value with a literal naming a built-in component or plugin
# (==, !=, in, not in; a literal tuple, list or set holding one counts),
# index with one (x["litellm"]), nor import a plugin package (tapir_*) or a
# library a plugin wraps (litellm, vllm, lm_eval, trl, peft, torch,
# transformers). Plugin names may appear in what users read (messages,
# hints, docstrings, help) and as defaults of config fields, which users
# see and change. What a plugin knows about itself is a capability or a
# flag (tapir.roles), read from the registry.

WRAPPED_LIBRARIES = {"litellm", "vllm", "lm_eval", "trl", "peft", "torch", "transformers"}

# (file under tapir/, literal): known exceptions, each with its reason.
ALLOWED = {
    ("progress.py", "transformers"): "quiets the library's logging when something else already imported it",
    ("pipeline/modelcard.py", "lmeval"): "model card metadata: lm-eval rows name their task as the dataset; "
                                         "(owner: model card) to move to an evaluator capability",
}


def builtin_names() -> set[str]:
    from tapir.plugins import ROLES, get_plugin_manager

    pm = get_plugin_manager()
    names = {name for name, info in pm.infos.items() if info.module.startswith("tapir_")}
    for role, table in pm.registry.by_role.items():
        if role != "models":
            names |= {name for name, c in table.items() if c.plugin in names}
    # "default" (the built-in teacher) is also the ordinary word: an option's
    # default, a chat template's name; the scan would only find those.
    # Plugins named after a role (judges, trainers, ...) are left out: the
    # role's name is the registry's key.
    return (names - {"default"} - set(ROLES)) | WRAPPED_LIBRARIES


def core_violations(names: set[str], root: Path = CORE) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            literals: list[ast.AST] = []
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    literals += list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            elif isinstance(node, ast.Subscript):
                literals.append(node.slice)
            elif isinstance(node, ast.Import):
                found += [(rel, node.lineno, a.name) for a in node.names
                          if a.name.split(".")[0] in WRAPPED_LIBRARIES or a.name.startswith("tapir_")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                if top in WRAPPED_LIBRARIES or top.startswith("tapir_"):
                    found.append((rel, node.lineno, top))
            found += [(rel, node.lineno, lit.value) for lit in literals
                      if isinstance(lit, ast.Constant) and isinstance(lit.value, str) and lit.value in names]
    return [(rel, line, name) for rel, line, name in found if (rel, name) not in ALLOWED]


def test_the_core_names_no_builtin_plugin(pm):
    names = builtin_names()
    assert {"hf", "litellm", "vllm", "pairwise", "trl", "lmeval", "task-aware"} <= names
    assert core_violations(names) == []


def test_the_rule_catches_what_it_forbids(tmp_path):
    """The scan above is not vacuous: each forbidden shape is found."""
    sample = tmp_path / "tapir"
    sample.mkdir()
    (sample / "bad.py").write_text(
        "import litellm\n"
        "from tapir_hf.backend import HFBackend\n"
        "def f(spec, cfg, reg):\n"
        "    if spec.backend != 'hf': pass\n"
        "    if cfg.judge.name == 'pairwise': pass\n"
        "    if spec.backend in ('vllm', 'other'): pass\n"
        "    return reg['litellm'], f'hf:{spec}', 'a message naming litellm'\n")
    found = core_violations({"hf", "litellm", "vllm", "pairwise"} | WRAPPED_LIBRARIES, sample)
    assert sorted((line, name) for _, line, name in found) == [
        (1, "litellm"), (2, "tapir_hf"), (4, "hf"), (5, "pairwise"), (6, "vllm"), (7, "litellm")]


# --- one copy of each thing (issue 18 item 4) ------------------------------------------------------


def test_both_trainers_extend_one_base_and_launch_imports_no_trainer():
    from tapir_trainers.base import BaseTrainer
    from tapir_trainers.hf_trainer import HFTrainer
    from tapir_trainers.trl_trainer import TRLTrainer

    assert issubclass(HFTrainer, BaseTrainer) and issubclass(TRLTrainer, BaseTrainer)
    for shared in ("train", "steps_for", "_prepare", "_claim_and_load", "_run"):
        assert shared not in HFTrainer.__dict__ and shared not in TRLTrainer.__dict__, shared
    launch = Path(__file__).resolve().parents[1] / "plugins" / "tapir_trainers" / "launch.py"
    imported = {node.module for node in ast.walk(ast.parse(launch.read_text())) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"hf_trainer", "trl_trainer", "base"}, imported  # no cycle back to a trainer


def test_one_cli_fixture_and_one_snapshot_helper():
    tests = Path(__file__).resolve().parent
    defining = {p.name for p in tests.glob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.FunctionDef) and node.name in ("cli", "snapshot")
                and (node.name == "cli" or p.name != "test_bad_inputs.py")}  # there: a folder's file hashes
    assert defining == {"conftest.py", "pipeline_helpers.py"}
