"""Centroids kept on disk: fitting embeds every labelled example (320 for
the shipped seed set: about 2 s on 2 cores), so a classifier built again
from the same examples and the same encoder weights reads them back.

The key is the examples' texts and labels, in order, and the encoder's
fingerprint (:func:`tapir_hf.encoder.encoder_fingerprint`); an encoder that
is not a local folder (a hub id) is never cached. A damaged or partly
written file is recomputed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from tapir.resources import cache_dir
from tapir_classifiers.labelled import Example

VERSION = 1  # bump when the centroid computation changes


def cache_key(examples: Sequence[Example], encoder_fingerprint: str) -> str:
    digest = hashlib.sha256(f"v{VERSION}\0{encoder_fingerprint}\0".encode())
    for ex in examples:
        digest.update(json.dumps([ex.text, ex.label]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cache_path(key: str) -> Path:
    return cache_dir() / "centroids" / f"{key[:32]}.npz"


def load(key: str):
    """``(labels, centroids)`` stored under ``key``, or None."""
    import numpy as np

    path = cache_path(key)
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return [str(label) for label in data["labels"]], data["centroids"].astype("float32")
    except (OSError, KeyError, ValueError):
        return None


def save(key: str, labels: Sequence[str], centroids) -> None:
    """Write atomically (a reader never sees half a file); a cache that
    cannot be written is only a slower next start."""
    import numpy as np

    path = cache_path(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), labels=np.array(list(labels)), centroids=centroids)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
