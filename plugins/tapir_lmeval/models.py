"""Which weights lm-eval loads for a tapir model id, and with which lm-eval model type.

Accepted: a local HF folder (a tapir checkpoint included; a PEFT adapter
folder loads its base model plus the adapter), ``embedded:NAME``, a tapir
model id whose backend is ``hf`` or ``vllm`` (``smollm2-135m-instruct``,
``hf:./folder``), or a hub id (``org/name``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir.errors import TapirError

LOCAL_BACKENDS = ("hf", "vllm")


@dataclass
class LMSpec:
    """What goes into ``simple_evaluate(model=..., model_args=...)``."""

    model_type: str  # lm-eval model name: "hf" or "vllm"
    model_args: dict[str, Any]
    device: str
    source: str  # "folder", "embedded", "hub", "adapter"
    extra: dict[str, Any] = field(default_factory=dict)


def _embedded_path(name: str) -> str:
    try:
        from tapir_hf.embedded import embedded_model_path
    except ImportError as exc:  # pragma: no cover - the hf plugin is a built-in
        raise TapirError(f"'{name}' needs the hf plugin (tapir_hf): {exc}") from None
    return str(embedded_model_path(name))


def weights_location(model: str) -> tuple[str, str | None, str]:
    """``(pretrained, peft_adapter_or_None, source)`` for a model id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path.resolve()), None, "folder"
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise TapirError(f"{adapter} names no base_model_name_or_path")
            pretrained, _, _ = weights_location(base)
            return pretrained, str(path.resolve()), "adapter"
        raise TapirError(f"{path} is a folder but holds no config.json (HF model) or adapter_config.json (PEFT)")
    if model.startswith("embedded:"):
        return _embedded_path(model), None, "embedded"

    from tapir.models import resolve

    try:
        spec = resolve(model)
    except TapirError:
        spec = None
    if spec is not None and spec.backend in LOCAL_BACKENDS:
        if spec.name != model:
            return weights_location(spec.name)
        return model, None, "hub"
    if "/" in model and not model.startswith(("/", ".", "~")):
        return model, None, "hub"  # a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct
    served_by = f" (it resolves to the '{spec.backend}' backend)" if spec else ""
    raise TapirError(
        f"lm-eval needs model weights, and '{model}' is not a local folder, a named local model "
        f"or a hub id{served_by}. Give a folder with config.json, a hub id (org/name), or a model "
        f"from `tapir models` served by hf or vllm."
    )


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def lm_spec(model: str, options: dict[str, Any]) -> LMSpec:
    """Pick lm-eval's model type and arguments for ``model`` under ``options``
    (``backend`` hf|vllm, ``device``, ``dtype``, ``model_args``)."""
    import importlib.util

    backend = str(options.get("backend") or "hf")
    if backend not in LOCAL_BACKENDS:
        raise TapirError(f"lmeval option backend must be one of {', '.join(LOCAL_BACKENDS)}, not '{backend}'")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise TapirError("backend=vllm needs vllm installed (pip install 'tapir-distill[vllm]', on a GPU machine)")
    pretrained, adapter, source = weights_location(model)
    device = str(options.get("device") or _default_device())
    dtype = options.get("dtype") or ("float32" if device == "cpu" else "auto")
    args: dict[str, Any] = {"pretrained": pretrained, "dtype": dtype}
    if adapter:
        args["lora_local_path" if backend == "vllm" else "peft"] = adapter
        if backend == "vllm":
            args["enable_lora"] = True
    extra_args = options.get("model_args") or {}
    if not isinstance(extra_args, dict):
        raise TapirError("lmeval option model_args must be a mapping, e.g. -o 'model_args={revision: main}'")
    args.update(extra_args)
    return LMSpec(backend, args, device, source)
