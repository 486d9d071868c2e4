"""Any model litellm can reach (OpenAI, Anthropic, Gemini, Bedrock, Ollama,
OpenAI-compatible servers such as vLLM's or FastChat's)."""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_backends(register):
    register(
        "litellm",
        "tapir_litellm.backend:LiteLLMBackend",
        description="any provider/model id litellm knows; async, retries, cost accounting",
        requires=("litellm",),
        extra="api",
    )


@hookimpl(trylast=True)
def resolve_model(model_id):
    if "/" in model_id and ":" not in model_id.split("/", 1)[0]:
        return ("litellm", model_id, {})
    return None
