"""What :class:`tapir_litellm.batch.BatchRunner` needs of a batch transport
(OpenAI's files + batches, litellm's batch functions, Anthropic's message
batches, ``vllm run-batch``), and the one batch shape they all report in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

# OpenAI's batch statuses; every transport reports in these.
LIVE = ("submitting", "validating", "in_progress", "finalizing", "completed", "cancelling")
DEAD = ("failed", "expired", "cancelled")


@dataclass
class RemoteBatch:
    """A provider's batch, in OpenAI's vocabulary."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class BatchingBackend(Protocol):
    """What the batch runner and the transports read of the backend whose
    requests they batch (:class:`tapir_litellm.backend.LiteLLMBackend`)."""

    model_name: str  # provider/model
    model_id: str
    api_base: str | None
    api_key_env: str | None
    timeout: float
    options: Any  # the backend's Options (batch_* settings)
    _store: Any  # the database batch ids are kept in (attach_store)

    def attach_store(self, store: Any) -> None: ...

    def _kwargs(self, request: Any) -> dict[str, Any]: ...

    def _to_completion(self, response: Any) -> Any: ...


class BatchTransport(Protocol):
    """One provider's batch API. ``data`` is OpenAI batch JSONL (one line per
    request: ``custom_id`` = the cache key, ``body`` = the chat request);
    ``results`` yields OpenAI batch *output* lines (``custom_id`` with
    ``response: {status_code, body}`` or ``error``), whatever the provider's
    own format."""

    name: str

    def submit(self, batch_id: str, data: bytes, n: int, record: Callable[..., None]) -> RemoteBatch:
        """Send the batch; ``record(input_file_id=...)`` keeps what was uploaded
        before the batch is created (a transport with nothing to upload
        records ``"inline"``): a row in ``submitting`` without it had no
        create, one with it is looked for (:meth:`find`). Returns the
        created batch."""

    def find(self, batch_id: str, row: dict[str, Any]) -> RemoteBatch | None:
        """Our batch ``batch_id`` if the provider has it (a submit interrupted
        after the create), else None. ``row`` is its ``api_batches`` row."""

    def retrieve(self, row: dict[str, Any]) -> RemoteBatch:
        """The batch now (``row["provider_batch_id"]`` names it)."""

    def results(self, remote: RemoteBatch) -> Iterator[dict[str, Any]]:
        """Every output and error line of a completed batch."""


def jsonl_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL text; a torn last line (a killed writer) is skipped."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry
