"""vLLM in-process generation, for GPU machines (``pip install 'tapir-distill[vllm]'``)."""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_backends(register):
    register(
        "vllm",
        "tapir_vllm.backend:VLLMBackend",
        description="vLLM LLM.generate in-process (GPU), tensor parallel",
        requires=("vllm",),
        extra="vllm",
        flags={"local_weights": True, "trainable": False},  # as VLLMBackend says (tests/test_capabilities.py)
        capabilities=(),
    )
