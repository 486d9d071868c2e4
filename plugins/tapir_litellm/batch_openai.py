"""The OpenAI batch transport: the ``openai`` client's files + batches
endpoints, on OpenAI or on a server that offers them (a litellm proxy, the
test stand-in). vLLM's and FastChat's OpenAI servers do not."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from tapir_litellm import endpoints
from tapir_litellm.batch_protocol import BatchingBackend, RemoteBatch, jsonl_lines



def remote_of(obj: Any) -> RemoteBatch:
    """An OpenAI-shaped batch object (the openai client's or litellm's) -> RemoteBatch."""
    errors = obj.errors if obj.errors else None
    return RemoteBatch(id=obj.id, status=obj.status, input_file_id=obj.input_file_id,
                       output_file_id=obj.output_file_id, error_file_id=obj.error_file_id,
                       errors=str(errors) if errors else None, metadata=dict(obj.metadata or {}))


class OpenAIBatches:
    """Files + batches through ``openai.OpenAI(base_url=api_base)``."""

    name = "openai"

    def __init__(self, backend: BatchingBackend):
        self.be = backend
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import openai

            base = self.be.api_base
            key = endpoints.api_key(self.be.model_name, base, self.be.api_key_env) or os.environ.get("OPENAI_API_KEY")
            self._client = openai.OpenAI(base_url=base, api_key=key or endpoints.PLACEHOLDER_KEY,
                                         max_retries=3, timeout=max(self.be.timeout, 60.0))
        return self._client

    def submit(self, batch_id: str, data: bytes, n: int, record: Callable[..., None]) -> RemoteBatch:
        file = self.client.files.create(file=(f"{batch_id}.jsonl", data), purpose="batch")
        record(input_file_id=file.id)
        created = self.client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                             completion_window="24h", metadata={"tapir_batch": batch_id})
        return remote_of(created)

    def find(self, batch_id: str, row: dict[str, Any]) -> RemoteBatch | None:
        for remote in self.client.batches.list(limit=100):
            if (remote.metadata or {}).get("tapir_batch") == batch_id:
                return remote_of(remote)
        return None

    def retrieve(self, row: dict[str, Any]) -> RemoteBatch:
        return remote_of(self.client.batches.retrieve(row["provider_batch_id"]))

    def results(self, remote: RemoteBatch) -> Iterator[dict[str, Any]]:
        for file_id in filter(None, (remote.output_file_id, remote.error_file_id)):
            yield from jsonl_lines(self.client.files.content(file_id).text)
