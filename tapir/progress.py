"""Progress for long work, on stderr, and the quiet the rest of the output needs.

* :func:`bar` is a bar per item: count of total, rate and ETA. On a terminal
  it is a tqdm bar redrawn in place; elsewhere (a log file, CI, a pipe) it
  writes a plain line at most every ``TAPIR_PROGRESS_EVERY`` seconds (15)
  and one when it ends, so a long phase is never silent and never floods.
* :func:`quiet_libraries` silences other libraries' bars, INFO logs and
  FutureWarnings (transformers' "Loading weights" / "Writing model shards",
  datasets' "Saving the dataset", huggingface_hub downloads) unless
  ``-v`` / ``TAPIR_VERBOSE=1``. The CLI and the Python API call it; importing
  tapir does not (a library must not change its host's logging on import).

``TAPIR_QUIET=1`` hides tapir's own progress too (tests).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from typing import TextIO

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_quiet() -> bool:
    return _flag("TAPIR_QUIET")


def is_verbose() -> bool:
    return _flag("TAPIR_VERBOSE")


def format_seconds(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def format_rate(done: int, elapsed: float, unit: str) -> str:
    if done <= 0 or elapsed <= 0:
        return f"? {unit}/s"
    rate = done / elapsed
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{elapsed / done:.1f} s/{unit}"


class Bar:
    """Counts items as they finish. ``update(n)`` after each finished item
    (or each batch of ``n``); ``line()`` is the text a log line shows."""

    def __init__(self, label: str, total: int | None, unit: str = "item", stream: TextIO | None = None,
                 every: float | None = None, clock=time.monotonic):
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._clock = clock
        self.started = clock()
        self._stream = stream
        self._tqdm = None
        self._every = float(os.environ.get("TAPIR_PROGRESS_EVERY", "15")) if every is None else every
        self._last = self.started
        self._wrote = False
        self._written_at = -1  # the count the last plain line showed
        self._closed = False
        self.enabled = not is_quiet() and total != 0
        if self.enabled and self._stream is None and _is_tty(sys.stderr):
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(total=total, desc=label, unit=f" {unit}s", file=sys.stderr, leave=False,
                                  dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
            except ImportError:  # pragma: no cover - tqdm comes with every local install
                self._tqdm = None

    # -- counting -------------------------------------------------------

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
            return
        now = self._clock()
        if self.enabled and now - self._last >= self._every:
            self._last = now
            self._write(self.line())

    def elapsed(self) -> float:
        return self._clock() - self.started

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before the first item or without a total."""
        if not self.total or self.done <= 0:
            return None
        return self.elapsed() * (self.total - self.done) / self.done

    def line(self) -> str:
        elapsed = self.elapsed()
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        tail = f", ETA {format_seconds(self.eta())}" if self.total and self.done < self.total else ""
        return (f"   {self.label}: {count} {self.unit}s{pct}, {format_rate(self.done, elapsed, self.unit)}, "
                f"{format_seconds(elapsed)} elapsed{tail}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled and self._wrote and self.done != self._written_at:
            self._write(self.line())  # the last count, when earlier lines were written

    def _write(self, text: str) -> None:
        self._wrote = True
        self._written_at = self.done
        stream = self._stream or sys.stderr
        print(text, file=stream, flush=True)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def say(message: str) -> None:
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


@contextmanager
def bar(label: str, total: int | None = None, unit: str = "item"):
    b = Bar(label, total, unit)
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


# --------------------------------------------------------------------------
# Other libraries' noise

# Read by transformers, datasets and huggingface_hub when they are imported.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads; transformers and datasets follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}
_NOISY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "torch", "lm_eval",
                  "lm-eval", "sentence_transformers", "LiteLLM", "litellm", "httpx", "filelock", "urllib3")
_quieted = False


def quiet_libraries(verbose: bool | None = None) -> bool:
    """Silence other libraries' progress bars, INFO logs and FutureWarnings,
    unless ``verbose`` (default: ``TAPIR_VERBOSE``). Safe to call twice;
    returns whether it silenced anything. Modules imported later read the
    environment variables set here; those already imported are told
    directly. tapir's own bars are untouched."""
    global _quieted
    if verbose is None:
        verbose = is_verbose()
    if verbose:
        os.environ["TAPIR_VERBOSE"] = "1"
        return False
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*torch_dtype.*deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*generation flags are not valid", category=UserWarning)
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - an odd transformers version must not break the CLI
            pass
    if "datasets" in sys.modules:
        try:
            import datasets

            datasets.utils.logging.set_verbosity_error()
            datasets.utils.logging.disable_progress_bar()
        except Exception:  # noqa: BLE001
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:  # noqa: BLE001
            pass
    _quieted = True
    return True
