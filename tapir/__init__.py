"""tapir: Task-Aware Curriculum Planning for Instruction Refinement.

Importing this package is cheap: no torch, transformers, litellm, vllm or
lm_eval at module level anywhere in the core.
"""

from tapir.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
