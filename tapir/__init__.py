"""tapir: Task-Aware Curriculum Planning for Instruction Refinement.

Importing this package is cheap: no torch, transformers, litellm, vllm or
lm_eval at module level anywhere in the core. The Python API (docs/python.md)
loads on first use::

    import tapir

    result = tapir.distill("configs/demo.yaml", overrides=["curriculum.rounds=1",
                                                           "curriculum.expand_per_round=[8]"])
    rows = tapir.bench.run("lmeval", result.checkpoints[1], {"tasks": ["arc_easy"], "limit": 10})
    table = tapir.compare([result.run_id])
"""

from tapir.hookspecs import hookimpl

__version__ = "0.1.0"

# The PyPI distribution (``pip install tapir-distill``): "tapir" on PyPI is an
# unrelated project. The import package and the command are ``tapir``.
DISTRIBUTION = "tapir-distill"

__all__ = ["hookimpl", "__version__", "DISTRIBUTION", "distill", "study", "bench", "compare", "DistillResult",
           "StageSummary"]

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "distill": ("tapir.api", "distill"),
    "study": ("tapir.study", None),  # a callable module: tapir.study(CONFIG) (docs/study.md)
    "DistillResult": ("tapir.api", "DistillResult"),
    "StageSummary": ("tapir.api", "StageSummary"),
    "bench": ("tapir.bench", None),  # tapir.bench.run(...)
    "compare": ("tapir.compare", None),  # a callable module: tapir.compare(...)
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tapir' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__():
    return sorted({*globals(), *_LAZY})
