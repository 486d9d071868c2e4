"""The provider prefixes litellm understands, without importing litellm
(its import takes seconds): ``provider/model`` is a litellm id only when
``provider`` is one of these. Used by :func:`tapir_litellm.resolve_model`;
tests/test_bad_inputs.py checks the list against the installed litellm.

Generated from ``litellm.provider_list`` (litellm 1.110.2). When litellm is
already imported, its own list is used instead.
"""

from __future__ import annotations

import sys

LITELLM_VERSION = "1.110.2"

PROVIDERS: frozenset[str] = frozenset((
    'a2a', 'a2a_agent', 'abliteration', 'ai21', 'ai21_chat', 'aiand', 'aiml', 'aiohttp_openai', 'amazon_nova',
    'anthropic', 'anthropic_text', 'apertis', 'assemblyai', 'auto_router', 'aws_polly', 'aws_textract',
    'azure', 'azure_ai', 'azure_speech', 'azure_text', 'baseten', 'bedrock', 'bedrock_mantle', 'bespoke',
    'bigmodel', 'black_forest_labs', 'bytez', 'cerebras', 'charity_engine', 'chatgpt', 'chutes', 'clarifai',
    'clf_ai_gateway', 'cloudflare', 'codestral', 'cognition', 'cohere', 'cohere_chat', 'cometapi',
    'compactifai', 'coralbricks', 'cortecs', 'cursor', 'custom', 'custom_openai', 'darkbloom', 'dashscope',
    'databricks', 'databricks_agent', 'datarobot', 'deepgram', 'deepinfra', 'deepseek', 'docker_model_runner',
    'dotprompt', 'edenai', 'elevenlabs', 'empiriolabs', 'empower', 'eu_jev', 'fal_ai', 'featherless_ai',
    'fireworks_ai', 'friendliai', 'galadriel', 'gdc', 'gemini', 'gigachat', 'github', 'github_copilot',
    'gradient_ai', 'groq', 'helicone', 'heroku', 'hosted_vllm', 'hostinger_router', 'huggingface', 'humanloop',
    'hyperbolic', 'inception', 'inferenceapis', 'infinity', 'jina_ai', 'kyma', 'lambda_ai', 'langflow',
    'langfuse', 'langgraph', 'laya', 'lemonade', 'libertai', 'litellm_agent', 'litellm_proxy', 'llamafile',
    'lm_studio', 'manus', 'maritalk', 'meta', 'meta_llama', 'microsoft_365_copilot', 'milvus', 'minimax',
    'mistral', 'modelscope', 'mongodb', 'moonshot', 'morph', 'nace', 'nadir', 'nano-gpt', 'nebius',
    'neosantara', 'nlp_cloud', 'novita', 'nscale', 'nvidia_nim', 'nvidia_riva', 'oci', 'ollama', 'ollama_chat',
    'oobabooga', 'openai', 'openai_like', 'opencode_go', 'openinfer', 'openrouter', 'opensearch', 'ovhcloud',
    'parallel_ai', 'parasail', 'perplexity', 'petals', 'pg_vector', 'pinstripes', 'poe', 'predibase', 'prism',
    'publicai', 'qwen_ai_platform', 'qwencloud', 'ragflow', 'recraft', 'reducto', 'refuseless', 'reka',
    'replicate', 'runwayml', 's3_vectors', 'sagemaker', 'sagemaker_chat', 'sagemaker_nova', 'sail',
    'sambanova', 'sap', 'scaledown', 'scaleway', 'scx-ai', 'snowflake', 'soniox', 'stability',
    'strands_decider', 'streamlake', 'synthetic', 'tencent', 'tensormesh', 'text-completion-codestral',
    'text-completion-inception', 'text-completion-openai', 'together_ai', 'topaz', 'transcribe', 'triton',
    'typesafe', 'v0', 'valkey', 'vercel_ai_gateway', 'vertex_ai', 'vertex_ai_beta', 'vllm', 'volcengine',
    'voyage', 'wally', 'wandb', 'watsonx', 'watsonx_text', 'xai', 'xiaomi_mimo', 'xinference', 'zai',
    'zerogpu',
))


def providers() -> frozenset[str]:
    """litellm's provider list: its own if litellm is imported, else the copy above."""
    module = sys.modules.get("litellm")
    listed = getattr(module, "provider_list", None) if module is not None else None
    if listed:
        return frozenset(str(getattr(p, "value", p)) for p in listed)
    return PROVIDERS


def is_provider(name: str) -> bool:
    return name in providers()
