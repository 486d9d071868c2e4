"""The vLLM backend's engine handling without vLLM or a GPU: a stand-in
engine that records its calls and can fail mid-batch. Chunks reach
on_result one by one (a crash loses at most one chunk), close() frees the
engine, and the pipeline closes backends before training."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from tapir.roles import Closable, GenerationParams, GenerationRequest


class StandInTokenizer:
    chat_template = "stand-in"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "|".join(m["content"] for m in messages) + "|assistant:"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.split()]}

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


class Recorder:
    def __init__(self):
        self.engines = 0
        self.generate_calls: list[int] = []  # prompts per engine call
        self.fail_on_call: int | None = None
        self.destroyed = 0
        self.alive = 0


@pytest.fixture
def vllm_stand_in(monkeypatch):
    rec = Recorder()

    class LLM:
        def __init__(self, **kwargs):
            rec.engines += 1
            rec.alive += 1
            self.kwargs = kwargs

        def __del__(self):
            rec.alive -= 1

        def get_tokenizer(self):
            return StandInTokenizer()

        def generate(self, prompts, sampling, use_tqdm=False):
            rec.generate_calls.append(len(prompts))
            if rec.fail_on_call == len(rec.generate_calls):
                raise RuntimeError("CUDA out of memory (stand-in)")
            return [SimpleNamespace(outputs=[SimpleNamespace(text=f"answer {len(p['prompt_token_ids'])}",
                                                             token_ids=[1, 2], logprobs=None)],
                                    prompt_token_ids=p["prompt_token_ids"]) for p in prompts]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    def destroy():
        rec.destroyed += 1

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    distributed = types.ModuleType("vllm.distributed")
    state = types.ModuleType("vllm.distributed.parallel_state")
    state.destroy_model_parallel = destroy
    state.destroy_distributed_environment = lambda: None
    for name, module in (("vllm", vllm), ("vllm.distributed", distributed),
                         ("vllm.distributed.parallel_state", state)):
        monkeypatch.setitem(sys.modules, name, module)
    return rec


def _requests(n):
    params = GenerationParams(max_new_tokens=4, temperature=0.0)
    return [GenerationRequest([{"role": "user", "content": "q " * (i + 1)}], params, meta={"item_id": f"i{i}"})
            for i in range(n)]


def _backend(**options):
    from tapir_vllm.backend import VLLMBackend

    return VLLMBackend("/models/student", VLLMBackend.Options(**options))


def test_chunks_reach_on_result_one_by_one(vllm_stand_in):
    backend = _backend(chunk_size=4)
    seen: list[tuple[int, int]] = []  # (index, engine calls made when it arrived)
    out = backend.generate(_requests(10), on_result=lambda i, c: seen.append((i, len(vllm_stand_in.generate_calls))))
    assert vllm_stand_in.generate_calls == [4, 4, 2]
    assert [i for i, _ in seen] == list(range(10))
    # every answer of chunk k was delivered before chunk k+1 was sent
    assert [calls for _, calls in seen] == [1] * 4 + [2] * 4 + [3] * 2
    assert all(c.ok for c in out) and out[9].text == "answer 11"  # item 9: ten "q" words + the template tail


def test_a_failing_chunk_loses_only_that_chunk(vllm_stand_in):
    vllm_stand_in.fail_on_call = 2
    backend = _backend(chunk_size=3)
    delivered = {}
    out = backend.generate(_requests(8), on_result=lambda i, c: delivered.setdefault(i, c))
    assert vllm_stand_in.generate_calls == [3, 3, 2]
    assert sorted(delivered) == list(range(8))  # every item answered: ok or failed with the reason
    assert [c.ok for c in out] == [True] * 3 + [False] * 3 + [True] * 2
    assert out[4].error == "RuntimeError: CUDA out of memory (stand-in)"


def test_close_frees_the_engine_and_the_next_call_starts_a_new_one(vllm_stand_in):
    backend = _backend()
    assert isinstance(backend, Closable)
    backend.generate(_requests(2))
    assert vllm_stand_in.engines == 1 and vllm_stand_in.alive == 1
    backend.close()
    assert vllm_stand_in.alive == 0 and vllm_stand_in.destroyed == 1
    backend.close()  # twice is fine
    assert vllm_stand_in.destroyed == 1
    backend.generate(_requests(1))
    assert vllm_stand_in.engines == 2 and vllm_stand_in.alive == 1


def test_cached_backend_close_reaches_the_engine(vllm_stand_in, store):
    from tapir.cache import CachedBackend

    cached = CachedBackend(_backend(), store)
    cached.generate(_requests(2))
    cached.close()
    assert vllm_stand_in.alive == 0


def test_cached_backend_close_is_a_no_op_for_a_backend_without_close(store):
    from fakes import ScriptedBackend
    from tapir.cache import CachedBackend

    inner = ScriptedBackend(lambda messages: "x")
    assert not isinstance(inner, Closable)
    CachedBackend(inner, store).close()


def test_hf_backend_close_drops_the_model_and_reloads(tiny_model):
    from tapir_hf.backend import _MODELS, HFBackend

    backend = HFBackend(str(tiny_model))
    params = GenerationParams(max_new_tokens=2, temperature=0.0)
    first = backend.generate([GenerationRequest([{"role": "user", "content": "hi"}], params)])[0]
    loaded = backend._loaded
    assert loaded is not None and any(v is loaded for v in _MODELS.values())
    backend.close()
    assert backend._loaded is None and not any(v is loaded for v in _MODELS.values())
    again = backend.generate([GenerationRequest([{"role": "user", "content": "hi"}], params)])[0]
    assert again.text == first.text  # loads again, same answer
