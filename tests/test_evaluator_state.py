"""Per-run state is passed, not stored on the component: an evaluator's
``run(..., force=...)`` hands ``force`` to what needs it (the judge's
backend, the answers) as an argument. One evaluator object may serve
several runs, one after another or at once; a flag left on it by one run
would be read by the next, and ``getattr(self, "_force", False)`` would hide
that it was never set."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

EVALUATORS = [("tapir_mtbench.runner", "MTBench"), ("tapir_alpacaeval.runner", "AlpacaEval")]


def _class_tree(module: str, name: str) -> ast.ClassDef:
    import importlib

    cls = getattr(importlib.import_module(module), name)
    (tree,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    return tree


@pytest.mark.parametrize("module,name", EVALUATORS)
def test_run_stores_nothing_on_the_evaluator(module, name):
    tree = _class_tree(module, name)
    stored = []
    for method in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"):
        for node in ast.walk(method):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                        target.value.id == "self":
                    stored.append(f"{method.name}: self.{target.attr}")
    assert stored == []


@pytest.mark.parametrize("module,name", EVALUATORS)
def test_no_getattr_on_self(module, name):
    tree = _class_tree(module, name)
    probes = [ast.unparse(node) for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"]
    assert probes == []


def test_force_reaches_the_judge_as_an_argument(monkeypatch, tmp_path):
    """The MT-Bench judge's backend is loaded with refresh=True for a forced
    run and without it for the next, on the same evaluator object."""
    from tapir_mtbench import judging
    from tapir_mtbench.options import Options
    from tapir_mtbench.runner import MTBench

    seen: list[dict] = []

    class Stop(Exception):
        pass

    def load_cached(model, store, run_id, options=None, **extra):
        seen.append(extra)
        raise Stop

    monkeypatch.setattr(judging, "load_cached", load_cached)
    evaluator = MTBench(Options(judge_model="openai/judge"))
    for refresh in (True, False):
        with pytest.raises(Stop):
            judging.make_judge(evaluator.options, None, "r1", [], refresh=refresh)
    assert seen == [{"refresh": True}, {}]
    assert not [k for k in vars(evaluator) if k != "options"]


SPLIT_MODULES = ["tapir_mtbench.runner", "tapir_mtbench.options", "tapir_mtbench.judging", "tapir_alpacaeval.runner",
                 "tapir_alpacaeval.options", "tapir_alpacaeval.reference_mode", "tapir_alpacaeval.robust_mode",
                 "tapir_alpacaeval.rows"]


@pytest.mark.parametrize("module", SPLIT_MODULES)
def test_no_probing_with_a_default(module):
    """``getattr(obj, "name", default)`` guesses at what a component has; the
    Judge protocol declares ``kind``, so it is read as ``judge.kind``."""
    import importlib

    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    probes = [ast.unparse(node) for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)]
    assert probes == []
