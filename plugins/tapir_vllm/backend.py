"""The ``vllm`` backend: in-process ``vllm.LLM.generate`` on GPU machines.

vLLM pins its own torch and transformers, so it lives in its own
environment (``pip install 'tapir[vllm]'``) and is imported only when the
first request is generated. Prompts are rendered with the model's chat
template (tokenizer of the loaded engine) and passed as token ids.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from tapir.roles import Completion, GenerationRequest, OnResult

from tapir_hf.backend import prompt_ids, resolve_name, weights_id
from tapir_vllm.mapping import to_completion, to_sampling_kwargs


class VLLMBackend:
    """``VLLMBackend(model_name, tensor_parallel_size=1, chat_template=True,
    **engine_options)``: ``model_name`` is a hub id, a folder or
    ``embedded:NAME``; ``engine_options`` go to ``vllm.LLM`` (dtype,
    gpu_memory_utilization, max_model_len, trust_remote_code, ...)."""

    def __init__(self, model_name: str, tensor_parallel_size: int = 1, chat_template: bool = True, **options):
        # The weights are named as the hf backend names them (folder path plus
        # content fingerprint), under a vllm: prefix: outputs of the two
        # engines differ numerically, so they never share cache entries.
        self.model_name = model_name
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.chat_template = bool(chat_template)
        self.options = options
        self.model_id = "vllm:" + weights_id(model_name, options.get("revision")) + ("" if chat_template else "|plain")
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def llm(self):
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(model=resolve_name(self.model_name)[0], tensor_parallel_size=self.tensor_parallel_size,
                            **self.options)
        return self._llm

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        results: list[Completion] = []
        with self._lock:
            started = time.perf_counter()
            try:
                from vllm import SamplingParams

                llm = self.llm
                tokenizer = llm.get_tokenizer()
                prompts = [{"prompt_token_ids": prompt_ids(tokenizer, r.messages, self.chat_template)}
                           for r in requests]
                sampling = [SamplingParams(**to_sampling_kwargs(r.params, r.sample)) for r in requests]
                outputs = llm.generate(prompts, sampling, use_tqdm=False)
                latency = time.perf_counter() - started
                results = [
                    to_completion(out, r.params.top_logprobs, latency, decode=lambda t: tokenizer.decode([t]))
                    for out, r in zip(outputs, requests)
                ]
            except ImportError as exc:
                error = f"vllm is not installed (pip install 'tapir[vllm]' on a GPU machine): {exc}"
                results = [Completion(error=error) for _ in requests]
            except Exception as exc:  # noqa: BLE001 - failures are answers, never raised
                results = [Completion(error=f"{type(exc).__name__}: {exc}") for _ in requests]
        if on_result:
            for i, completion in enumerate(results):
                on_result(i, completion)
        return results
