"""The vLLM backend without vLLM or a GPU: parameter mapping, output
conversion, and listing as unavailable."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest

from tapir.roles import GenerationParams, GenerationRequest
from tapir_vllm.mapping import to_completion, to_sampling_kwargs

NO_VLLM = importlib.util.find_spec("vllm") is None


def test_greedy_mapping():
    kw = to_sampling_kwargs(GenerationParams(max_new_tokens=64, top_p=0.5, seed=3), sample=4)
    assert kw == {
        "n": 1,
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 1.0,  # greedy ignores top_p and seed, as the cache key does
        "seed": None,
        "stop": [],
        "include_stop_str_in_output": False,
        "logprobs": None,
    }


def test_sampled_mapping_seeds_each_sample():
    params = GenerationParams(max_new_tokens=10, temperature=0.7, top_p=0.9, stop=("\n\n", "###"), top_logprobs=5,
                              seed=11)
    a, b = to_sampling_kwargs(params, 0), to_sampling_kwargs(params, 1)
    assert a["temperature"] == 0.7 and a["top_p"] == 0.9
    assert a["stop"] == ["\n\n", "###"] and a["logprobs"] == 5 and a["max_tokens"] == 10
    assert a["seed"] == params.sample_seed(0) and b["seed"] == params.sample_seed(1)
    assert a["seed"] != b["seed"]
    assert to_sampling_kwargs(params, 0) == a  # reproducible
    assert 0 <= a["seed"] < 2**31


def test_mapping_is_accepted_by_sampling_params_when_vllm_is_there():
    vllm = pytest.importorskip("vllm")
    params = GenerationParams(max_new_tokens=5, temperature=0.5, stop=("x",), top_logprobs=2, seed=1)
    vllm.SamplingParams(**to_sampling_kwargs(params, 3))


def _lp(logprob, rank, text):
    return SimpleNamespace(logprob=logprob, rank=rank, decoded_token=text)


def test_request_output_to_completion():
    # Token 7 chosen (rank 2), with top-2 {5: rank 1, 7: rank 2}; then token 9
    # chosen outside the top-1 (vLLM adds the sampled token to the dict).
    first = SimpleNamespace(
        text=" yes!",
        token_ids=[7, 9],
        logprobs=[
            {5: _lp(-0.5, 1, " no"), 7: _lp(-1.2, 2, " yes")},
            {9: _lp(-3.0, 4, "!"), 2: _lp(-0.1, 1, "."), 3: _lp(-2.5, 2, "?")},
        ],
    )
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3, 4], outputs=[first])
    c = to_completion(out, top_logprobs=2, latency_s=0.25)
    assert c.text == " yes!" and c.prompt_tokens == 4 and c.completion_tokens == 2 and c.latency_s == 0.25
    assert [t.token for t in c.logprobs] == [" yes", "!"]
    assert c.logprobs[0].logprob == -1.2 and c.logprobs[0].top == [(" no", -0.5), (" yes", -1.2)]
    assert c.logprobs[1].top == [(".", -0.1), ("?", -2.5)]
    assert all(math.isfinite(t.logprob) for t in c.logprobs)
    assert to_completion(out, top_logprobs=0).logprobs is None


def test_missing_decoded_token_falls_back_to_decode():
    first = SimpleNamespace(text="a", token_ids=[4], logprobs=[{4: _lp(-0.2, 1, None)}])
    c = to_completion(SimpleNamespace(prompt_token_ids=None, outputs=[first]), 1, decode=lambda t: f"<{t}>")
    assert c.logprobs[0].token == "<4>" and c.prompt_tokens is None


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_plugin_lists_unavailable_without_vllm(pm):
    component = pm.registry.get("backends", "vllm")
    assert component.available is False
    assert "vllm" in component.reason


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_backend_without_vllm_answers_errors(tiny_model):
    from tapir_vllm.backend import VLLMBackend

    backend = VLLMBackend(str(tiny_model), VLLMBackend.Options(tensor_parallel_size=2))
    assert backend.model_id.startswith("vllm:" + str(tiny_model.resolve()) + "@")
    seen = []
    out = backend.generate([GenerationRequest([{"role": "user", "content": "hi"}])] * 2,
                           on_result=lambda i, c: seen.append(i))
    assert seen == [0, 1]
    assert all(c.error and "vllm" in c.error for c in out)


def test_vllm_and_hf_ids_never_collide(tiny_model):
    from tapir_hf.backend import HFBackend
    from tapir_vllm.backend import VLLMBackend

    assert VLLMBackend(str(tiny_model)).model_id != HFBackend(str(tiny_model)).model_id
    assert VLLMBackend("org/model").model_id == "vllm:org/model"


def test_vllm_options_are_declared(tiny_model):
    """Typed options (checked before vllm is imported): a typo is an error naming the option."""
    from tapir.errors import ConfigError
    from tapir.options import validate
    from tapir_vllm.backend import VLLMBackend

    with pytest.raises(ConfigError, match="Did you mean 'tensor_parallel_size'"):
        validate(VLLMBackend.Options, {"tensor_parallel": 2}, "student.options")
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        validate(VLLMBackend.Options, {"gpu_memory_utilization": 1.5}, "student.options")
    options = validate(VLLMBackend.Options, {"max_model_len": 512, "engine_options": {"swap_space": 1}}, "x")
    kwargs = VLLMBackend(str(tiny_model), options).engine_kwargs()
    assert kwargs["model"] == str(tiny_model.resolve()) and kwargs["max_model_len"] == 512
    assert kwargs["swap_space"] == 1 and "max_num_seqs" not in kwargs and kwargs["tensor_parallel_size"] == 1
