"""Progress display for long work (stderr; quiet with TAPIR_QUIET=1)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager


class Bar:
    def __init__(self, label: str, total: int | None):
        self.label = label
        self.total = total
        self.done = 0
        self._tqdm = None
        if not os.environ.get("TAPIR_QUIET"):
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False,
                                  dynamic_ncols=True, mininterval=1.0)
            except ImportError:  # pragma: no cover
                self._tqdm = None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def say(message: str) -> None:
    if not os.environ.get("TAPIR_QUIET"):
        print(message, file=sys.stderr, flush=True)


@contextmanager
def bar(label: str, total: int | None = None):
    b = Bar(label, total)
    try:
        yield b
    finally:
        b.close()


@contextmanager
def timed(label: str):
    start = time.perf_counter()
    say(f"-> {label}")
    try:
        yield
    finally:
        say(f"   {label}: {time.perf_counter() - start:.1f}s")
