"""The ``hf`` backend's capabilities (tapir.roles.CAPABILITIES), named in its
register(...) call with ``capabilities="tapir_hf.capabilities"`` so that
registering it imports this module, not the backend's (nor torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tokenizer_file(model_name: str, options: Any) -> str | None:
    """The model's ``tokenizer.json`` on this machine: in its folder, or in
    the hub cache for a hub id (at ``options["revision"]`` when set); None
    when there is none on disk (nothing is downloaded)."""
    from tapir.models import hub_org

    folder = Path(model_name).expanduser()
    if folder.is_dir():
        candidate = folder / "tokenizer.json"
        return str(candidate) if candidate.is_file() else None
    if hub_org(model_name) is None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    revision = options.get("revision") if isinstance(options, dict) else getattr(options, "revision", None)
    found = try_to_load_from_cache(model_name, "tokenizer.json", revision=revision)
    return found if isinstance(found, str) else None
