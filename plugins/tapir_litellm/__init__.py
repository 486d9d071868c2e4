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
    """Any ``provider/model`` id (answered last, after every other plugin);
    never a filesystem path such as ``./out/student`` or ``/models/x``."""
    provider, sep, name = model_id.partition("/")
    if not sep or not provider or not name or ":" in provider or provider in (".", "..", "~"):
        return None
    return ("litellm", model_id, {})
