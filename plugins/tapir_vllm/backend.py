"""The ``vllm`` backend: in-process ``vllm.LLM.generate`` on GPU machines.

vLLM pins its own torch and transformers, so it lives in its own
environment (``pip install 'tapir-distill[vllm]'``) and is imported only when the
first request is generated. Prompts are rendered with the model's chat
template (tokenizer of the loaded engine) and passed as token ids.

Requests go to the engine in chunks of ``chunk_size``: each chunk's answers
reach ``on_result`` (and so the store) before the next chunk starts, so a
crash or an out-of-memory error loses at most one chunk; a chunk whose
``generate`` raised answers its requests with the error (a re-run retries
them) and the next chunk is tried. ``close()`` shuts the engine down and
frees its GPU memory: the pipeline calls it when a stage is done with the
student, before every training round and at the end of a run. Data
parallelism: one engine a process here; several replicas are served with
``student.serve.replicas`` (one server a GPU group, filling the litellm
backend's server pool), see docs/backends-local.md.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from tapir.options import Options, option
from tapir.roles import Completion, GenerationRequest, OnResult, deliver

from tapir_hf.backend import prompt_ids, resolve_name, weights_id
from tapir_vllm.mapping import to_completion, to_sampling_kwargs


class VLLMBackend:
    """``vllm.LLM`` in this process. ``model_name`` is a hub id, a folder or
    ``embedded:NAME``; options: :class:`VLLMBackend.Options`."""

    local_weights = True  # tapir.roles.FLAGS
    trainable = False  # served here, trained by the hf trainers under another backend

    class Options(Options):
        tensor_parallel_size: int = option(1, "GPUs to shard the model over (vllm tensor parallelism)", ge=1)
        chat_template: bool = option(True, "apply the tokenizer's chat template; false joins the message texts")
        dtype: str = option("auto", "weights dtype for vllm (auto, bfloat16, float16, float32)")
        gpu_memory_utilization: float = option(0.9, "share of GPU memory vllm may take", gt=0.0, le=1.0)
        max_model_len: int | None = option(None, "context length; default the model's", ge=16)
        max_num_seqs: int | None = option(None, "sequences vllm schedules at once; default vllm's", ge=1)
        enforce_eager: bool = option(False, "no CUDA graphs (faster start, slower decoding)")
        trust_remote_code: bool = option(False, "let transformers/vllm run code shipped with the model")
        revision: str | None = option(None, "hub revision (hub ids only)")
        seed: int = option(0, "engine seed (per-request seeds come from the generation params)")
        chunk_size: int = option(256, "requests handed to the engine at once; each chunk's answers are stored before "
                                      "the next starts, so a crash loses at most one chunk", ge=1)
        engine_options: dict[str, Any] = option({}, "further keyword arguments for vllm.LLM, passed as given")

    def __init__(self, model_name: str, options: "VLLMBackend.Options | None" = None):
        # The weights are named as the hf backend names them (folder path plus
        # content fingerprint), under a vllm: prefix: outputs of the two
        # engines differ numerically, so they never share cache entries.
        options = options if options is not None else self.Options()
        self.options = options
        self.model_name = model_name
        self.tensor_parallel_size = int(options.tensor_parallel_size)
        self.chat_template = bool(options.chat_template)
        self.model_id = ("vllm:" + weights_id(model_name, options.revision)
                         + ("" if options.chat_template else "|plain"))
        self._llm: Any = None
        self._lock = threading.Lock()

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``."""
        o = self.options
        kwargs: dict[str, Any] = {
            "model": resolve_name(self.model_name)[0],
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": o.dtype,
            "gpu_memory_utilization": o.gpu_memory_utilization,
            "enforce_eager": o.enforce_eager,
            "trust_remote_code": o.trust_remote_code,
            "seed": o.seed,
        }
        for key in ("max_model_len", "max_num_seqs", "revision"):
            if getattr(o, key) is not None:
                kwargs[key] = getattr(o, key)
        kwargs.update(o.engine_options)
        return kwargs

    @property
    def llm(self):
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(**self.engine_kwargs())
        return self._llm

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (:class:`tapir.roles.Closable`);
        the next generate starts a new engine."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is None:
            return
        del llm  # the last reference: the engine and its workers go with it
        _release_vllm_state()

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        results: list[Completion] = []
        size = int(self.options.chunk_size)
        with self._lock:
            for start in range(0, len(requests), size):
                chunk = list(requests[start : start + size])
                done = self._generate_chunk(chunk)
                results.extend(done)
                deliver(on_result, enumerate(done, start))  # a chunk's answers: one write
        return results

    def _generate_chunk(self, requests: list[GenerationRequest]) -> list[Completion]:
        started = time.perf_counter()
        try:
            from vllm import SamplingParams

            llm = self.llm
            tokenizer = llm.get_tokenizer()
            prompts = [{"prompt_token_ids": prompt_ids(tokenizer, r.messages, self.chat_template)} for r in requests]
            sampling = [SamplingParams(**to_sampling_kwargs(r.params, r.sample)) for r in requests]
            outputs = llm.generate(prompts, sampling, use_tqdm=False)
            latency = time.perf_counter() - started
            return [to_completion(out, r.params.top_logprobs, latency, decode=lambda t: tokenizer.decode([t]))
                    for out, r in zip(outputs, requests)]
        except ImportError as exc:
            error = f"vllm is not installed (pip install 'tapir-distill[vllm]' on a GPU machine): {exc}"
            return [Completion(error=error) for _ in requests]
        except Exception as exc:  # noqa: BLE001 - failures are answers, never raised
            return [Completion(error=f"{type(exc).__name__}: {exc}") for _ in requests]


def _release_vllm_state() -> None:
    """vLLM's process-wide state (model-parallel groups, the distributed
    environment), then torch's CUDA cache, so the next engine or a training
    process finds the GPU free."""
    import gc
    import sys

    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except ImportError:
        pass
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
