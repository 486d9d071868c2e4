"""The litellm batch transport: litellm's ``create_file`` / ``create_batch`` /
``retrieve_batch`` / ``file_content`` (/ ``list_batches``) with
``custom_llm_provider`` = the model's provider, for the providers whose
whole cycle litellm 1.110.2 implements (Azure, Vertex AI, Bedrock, Mistral,
Gemini, xAI, a litellm proxy). litellm turns tapir's OpenAI batch JSONL
into the provider's own format and its output back.

``list_batches`` (to adopt a batch created by a process killed before it
stored the id) exists in litellm only for some providers
(:data:`tapir_litellm.batch.LITELLM_LISTABLE`); for the others such a batch
cannot be found and its requests are submitted again (the window is the
time between the provider's answer to the create and one SQLite commit).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from tapir_litellm import endpoints
from tapir_litellm.batch_openai import remote_of
from tapir_litellm.batch_protocol import BatchingBackend, RemoteBatch, jsonl_lines
from tapir_litellm.library import import_litellm



class LiteLLMBatches:
    """One provider's batch API through litellm's batch functions."""

    name = "litellm"

    def __init__(self, backend: BatchingBackend, listable: tuple[str, ...]):
        self.be = backend
        self.provider = endpoints.provider_of(backend.model_name)
        self.listable = self.provider in listable

    def _auth(self) -> dict[str, Any]:
        """api_base / api_key where tapir knows them; else litellm reads the provider's environment."""
        import_litellm()
        base = self.be.api_base
        key = endpoints.api_key(self.be.model_name, base, self.be.api_key_env)
        auth: dict[str, Any] = {"custom_llm_provider": self.provider, "timeout": max(self.be.timeout, 60.0)}
        if base:
            auth["api_base"] = base
        if key:
            auth["api_key"] = key
        return auth

    def submit(self, batch_id: str, data: bytes, n: int, record: Callable[..., None]) -> RemoteBatch:
        import litellm

        file = litellm.create_file(file=(f"{batch_id}.jsonl", data), purpose="batch", **self._auth())
        record(input_file_id=file.id)
        created = litellm.create_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                       input_file_id=file.id, metadata={"tapir_batch": batch_id},
                                       model=self.be.model_name, **self._auth())
        return remote_of(created)

    def find(self, batch_id: str, row: dict[str, Any]) -> RemoteBatch | None:
        import litellm

        if not self.listable:
            return None
        listed = litellm.list_batches(limit=100, **self._auth())
        for remote in listed.data:
            if (remote.metadata or {}).get("tapir_batch") == batch_id:
                return remote_of(remote)
        return None

    def retrieve(self, row: dict[str, Any]) -> RemoteBatch:
        import litellm

        return remote_of(litellm.retrieve_batch(batch_id=row["provider_batch_id"], model=self.be.model_name,
                                                **self._auth()))

    def results(self, remote: RemoteBatch) -> Iterator[dict[str, Any]]:
        import litellm

        for file_id in filter(None, (remote.output_file_id, remote.error_file_id)):
            content = litellm.file_content(file_id=file_id, model=self.be.model_name, **self._auth())
            yield from jsonl_lines(_text_of(content))


def _text_of(content: Any) -> str:
    """litellm's file content (an HttpxBinaryResponseContent) as text."""
    return content.content.decode("utf-8", errors="replace")

