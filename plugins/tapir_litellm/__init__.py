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
        capabilities="tapir_litellm.capabilities",
        flags={},
    )


@hookimpl(trylast=True)
def resolve_model(model_id):
    """Any ``provider/model`` id whose provider litellm knows (answered last,
    after every other plugin); never a filesystem path such as
    ``./out/student`` or a hub id such as ``meta-llama/Llama-2-7b-hf``
    (``meta-llama`` is no litellm provider: the core then says ``did you
    mean hf:meta-llama/Llama-2-7b-hf?``)."""
    from tapir_litellm.providers import is_provider

    provider, sep, name = model_id.partition("/")
    if not sep or not provider or not name or ":" in provider or provider in (".", "..", "~"):
        return None
    if not is_provider(provider):
        return None
    return ("litellm", model_id, {})
