"""Where a model is served and with which key: the effective base URL (from
the options or the provider's environment variables), the key's variable,
what is missing before a call can be sent, and texts with secrets cut out.

Nothing here sends a request; :func:`check_credentials` is what preflight
and ``generate`` ask before the first call.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from tapir_litellm.library import import_litellm

PLACEHOLDER_KEY = "sk-no-key-needed"  # self-hosted OpenAI-compatible servers accept any key
OPENAI_HOST = "api.openai.com"


def provider_of(model_name: str) -> str:
    return model_name.partition("/")[0] if "/" in model_name else "openai"


def base_env_vars(provider: str) -> tuple[str, ...]:
    """Environment variables litellm reads a provider's base URL from, in its order."""
    if provider in ("openai", "text-completion-openai"):
        return ("OPENAI_BASE_URL", "OPENAI_API_BASE")
    up = provider.upper().replace("-", "_")
    return (f"{up}_API_BASE", f"{up}_BASE_URL")


def key_env_var(provider: str) -> str:
    """The usual key variable of a provider (what litellm reads by default)."""
    special = {"openai": "OPENAI_API_KEY", "text-completion-openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY",
               "vertex_ai": "GOOGLE_APPLICATION_CREDENTIALS", "bedrock": "AWS_ACCESS_KEY_ID",
               "azure": "AZURE_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY"}
    return special.get(provider, f"{provider.upper().replace('-', '_')}_API_KEY")


def effective_base(model_name: str, api_base: str | None, env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(base URL or None, where it came from: ``option``, the variable's name, or ``default``)."""
    if api_base:
        return api_base.rstrip("/"), "option"
    env = os.environ if env is None else env
    for var in base_env_vars(provider_of(model_name)):
        value = env.get(var)
        if value:
            return value.rstrip("/"), var
    return None, "default"


def self_hosted(model_name: str, base: str | None) -> bool:
    """An OpenAI-compatible server of the user's own (a key is optional there)."""
    return bool(base) and model_name.startswith("openai/") and OPENAI_HOST not in base


def missing_variables(model_name: str, api_base: str | None, api_key_env: str | None,
                      env: Mapping[str, str] | None = None) -> list[str]:
    """Environment variables that must be set before a call to ``model_name`` can be sent."""
    env = os.environ if env is None else env
    if api_key_env:
        return [] if env.get(api_key_env) else [api_key_env]
    base, _ = effective_base(model_name, api_base, env)
    if self_hosted(model_name, base):
        return []
    provider = provider_of(model_name)
    if provider in ("openai", "anthropic", "gemini", "groq", "mistral", "deepseek", "xai", "cohere",
                    "together_ai", "openrouter", "fireworks_ai", "perplexity"):
        var = key_env_var(provider)
        if provider == "gemini" and env.get("GOOGLE_API_KEY"):
            return []
        return [] if env.get(var) else [var]
    # Other providers (bedrock, vertex_ai, azure, ollama, ...): litellm's own table.
    try:
        found = import_litellm().validate_environment(model=model_name, api_base=base)
    except Exception:  # an unknown provider is reported by the call itself
        return []
    return [k for k in found.get("missing_keys") or [] if not k.endswith(("_API_BASE", "_BASE_URL"))]


def api_key(model_name: str, base: str | None, api_key_env: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key to send, read from the environment at call time (never kept):
    the named variable, else the provider's (``OPENAI_API_KEY`` for a
    self-hosted OpenAI-compatible server too), else a placeholder for a
    self-hosted server; ``None`` lets litellm find the provider's own."""
    env = os.environ if env is None else env
    if api_key_env:
        return env.get(api_key_env)
    if self_hosted(model_name, base):
        return env.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
    return None


def secrets_in_env(api_key_env: str | None, env: Mapping[str, str] | None = None) -> list[str]:
    """Key values present in the environment, to cut out of any text we keep."""
    env = os.environ if env is None else env
    names = {api_key_env} if api_key_env else set()
    names |= {k for k in env if k.endswith(("_API_KEY", "_TOKEN", "_SECRET", "_SECRET_ACCESS_KEY"))}
    return [v for v in (env.get(n) for n in names if n) if v and len(v) >= 6]


def clean(text: str, api_key_env: str | None = None, limit: int = 2000) -> str:
    """``text`` with every key we know of (the environment's, and anything that
    looks like one: in URLs, headers, ``key=value``) replaced by ``<redacted>``."""
    from tapir.runs import redact

    for secret in secrets_in_env(api_key_env):
        text = text.replace(secret, "<redacted>")
    return str(redact(text))[:limit]


def hint_404(base: str | None) -> str:
    base = base.partition("?")[0] if base else base
    if base and not base.rstrip("/").endswith("/v1"):
        return (f" Hint: OpenAI-compatible servers (vLLM, FastChat, llama.cpp, Ollama) serve under /v1: "
                f"did you mean api_base: {base.rstrip('/')}/v1 ?")
    where = f" ({base}/models lists the served names)" if base else ""
    return f" Hint: check the model name and the api_base{where}."


def options_of(options: Any) -> dict[str, Any]:
    """A plain dict from an Options object or a dict."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    return options.model_dump()
