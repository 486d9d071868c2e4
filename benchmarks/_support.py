"""Importing this puts ``tests/support`` on ``sys.path``, so a benchmark can
use the test helpers (``tapir_testing``: the local OpenAI-compatible server,
the tiny model), which live outside the runtime package ``tapir``."""

import sys
import time
from pathlib import Path
from typing import Callable

SUPPORT = str(Path(__file__).resolve().parent.parent / "tests" / "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)


def timed(fn: Callable, record: Callable[[float], object], clock: Callable[[], float] = time.perf_counter) -> Callable:
    """``fn``, with the time each call takes on ``clock`` handed to ``record``
    (also when it raises)."""

    def wrapper(*args, **kwargs):
        started = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            record(clock() - started)

    return wrapper
