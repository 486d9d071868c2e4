"""Test and benchmark helpers, kept out of the runtime package ``tapir``.

* :mod:`tapir_testing.openai_server`: a local OpenAI-compatible server
  (chat completions, files, batches) with fault injection.
* :mod:`tapir_testing.models`: :func:`build_tiny_model`, a tiny random Llama.

Importable from tests (``tests/conftest.py`` puts ``tests/support`` on
``sys.path``) and benchmarks (each adds the same folder); never from tapir.
"""

from __future__ import annotations

import sys
from pathlib import Path

SUPPORT_DIR = Path(__file__).resolve().parent.parent


def ensure_importable() -> None:
    """Put ``tests/support`` on ``sys.path`` (for child processes started by tests)."""
    if str(SUPPORT_DIR) not in sys.path:
        sys.path.insert(0, str(SUPPORT_DIR))
