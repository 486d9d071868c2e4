"""transformers without its progress bars (and, on request, its warnings)
while a model loads: the backend and the embedded models' conversion both
load through it."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def quiet_transformers(warnings: bool = True):
    """No progress bars from transformers (a one-second load needs none);
    with ``warnings=False`` no warnings either."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if not warnings:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
