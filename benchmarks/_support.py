"""Importing this puts ``tests/support`` on ``sys.path``, so a benchmark can
use the test helpers (``tapir_testing``: the local OpenAI-compatible server,
the tiny model), which live outside the runtime package ``tapir``."""

import sys
from pathlib import Path

SUPPORT = str(Path(__file__).resolve().parent.parent / "tests" / "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)
