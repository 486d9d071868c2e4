"""The ``hf`` trainer plugin on the tiny model: labels, weights, save/load,
LoRA merge, resume, packing and weighted sampling. Each test takes seconds."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapir.errors import TapirError  # noqa: E402
from tapir.roles import TrainExample  # noqa: E402


def _examples(n: int = 8, weight: float = 1.0) -> list[TrainExample]:
    return [
        TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}], f"The answer is {2 * i}.", weight)
        for i in range(n)
    ]


def _mixed_examples(n: int = 24) -> list[TrainExample]:
    """Prompts and responses of very different lengths."""
    out = []
    for i in range(n):
        words = " ".join(["step"] * (3 + (i * 7) % 60))
        out.append(TrainExample([{"role": "user", "content": f"Question {i}: explain."}], f"{words} done {i}.", 1.0))
    return out


def _trainer(**options):
    from tapir.plugins import registry

    return registry().get("trainers", "hf").create(options=options)


FAST = dict(batch_size=4, micro_batch_size=4, epochs=1, lr=1e-3, seed=0, save_steps=1000)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def _core_trainer(model, tmp_path):
    from transformers import TrainingArguments

    from tapir_trainers.trainer_core import WeightedLossTrainer

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False)
    return WeightedLossTrainer(model=model, args=args)


# ---- registration ---------------------------------------------------------------------


def test_registered_lazily():
    from tapir.plugins import registry

    comp = registry().get("trainers", "hf")
    assert comp.factory == "tapir_trainers.hf_trainer:HFTrainer"
    assert comp.available
    trainer = comp.create(options={"lr": 1e-4})
    assert hasattr(trainer, "train")


def test_unknown_option_and_bad_weights(tiny_model, tmp_path):
    from tapir.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown option 'learning_rat'.*Did you mean 'learning_rate'"):
        _trainer(learning_rat=1e-3)
    with pytest.raises(ConfigError, match="weighting must be"):
        _trainer(weighting="both")
    with pytest.raises(TapirError, match="weight 0"):
        _trainer().train(str(tiny_model), _examples(2, weight=0.0), str(tmp_path))
    with pytest.raises(TapirError, match=">= 0"):
        _trainer().train(str(tiny_model), _examples(2, weight=-1.0), str(tmp_path))


def test_familiar_names_and_aliases():
    """transformers' TrainingArguments names; the short names are aliases; both together is an error."""
    from tapir.errors import ConfigError
    from tapir_trainers.hf_trainer import HFTrainer

    t = _trainer(learning_rate=1e-4, num_train_epochs=2, per_device_train_batch_size=4,
                 gradient_accumulation_steps=3, warmup_ratio=0.1, weight_decay=0.01, lr_scheduler_type="linear",
                 max_grad_norm=0.5, seed=7, logging_steps=2, gradient_checkpointing=True, bf16=False)
    o = t.options
    assert (o.lr, o.num_train_epochs, o.batch_arithmetic(1), o.max_grad_norm) == (1e-4, 2, (4, 3), 0.5)
    old = _trainer(lr=3e-4, epochs=1, batch_size=16, micro_batch_size=4).options
    assert (old.learning_rate, old.num_train_epochs, old.total_batch_size) == (3e-4, 1, 16)
    assert old.batch_arithmetic(1) == (4, 4) and old.batch_arithmetic(2) == (4, 2)
    with pytest.raises(ConfigError, match="'lr' is an alias of 'learning_rate'"):
        _trainer(lr=1e-3, learning_rate=1e-3)
    with pytest.raises(ConfigError, match="not both"):
        _trainer(batch_size=32, gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match="bf16 and fp16"):
        _trainer(bf16=True, fp16=True)
    # per-call overrides may use either name and replace the configured value
    merged = old.merged({"learning_rate": 1e-5, "gradient_accumulation_steps": 2})
    assert merged.lr == 1e-5 and merged.batch_arithmetic(1) == (4, 2)
    with pytest.raises(ValueError, match="alias"):
        old.merged({"lr": 1e-5, "learning_rate": 1e-5})
    lora = HFTrainer(HFTrainer.Options(lora={"r": 4})).options.lora
    assert (lora.r, lora.alpha, lora.target_modules) == (4, 32, "all-linear")
    with pytest.raises(ConfigError, match="lora.rank"):
        _trainer(lora={"rank": 4})


# ---- labels -----------------------------------------------------------------------------


def test_labels_mask_exactly_the_prompt_tokens(tokenizer):
    from tapir_trainers.collate import IGNORE, encode_examples

    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Germany?"},
    ]
    ex = TrainExample(prompt, "Berlin is the capital.", 1.0)
    [enc], dropped = encode_examples(tokenizer, [ex], max_length=512)
    assert dropped == []
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert enc.input_ids[:n] == prompt_ids
    assert enc.labels[:n] == [IGNORE] * n
    learned = enc.labels[n:]
    assert learned == enc.input_ids[n:]
    assert IGNORE not in learned
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert learned[-1] == im_end and learned.count(im_end) == 1  # stops right after the end of turn
    assert tokenizer.decode(learned) == "Berlin is the capital.<|im_end|>"


def test_truncation_and_dropped_prompts(tokenizer):
    from tapir_trainers.collate import IGNORE, encode_examples

    long_prompt = TrainExample([{"role": "user", "content": "word " * 200}], "ok", 1.0)
    long_answer = TrainExample([{"role": "user", "content": "hi"}], "word " * 200, 1.0)
    encoded, dropped = encode_examples(tokenizer, [long_prompt, long_answer], max_length=64)
    assert dropped == [0]
    assert len(encoded) == 1 and encoded[0].index == 1
    assert len(encoded[0].input_ids) == 64 and encoded[0].truncated
    assert encoded[0].labels[-1] != IGNORE


def test_dropped_counted_in_metrics(tiny_model, tmp_path):
    examples = _examples(4) + [TrainExample([{"role": "user", "content": "word " * 200}], "ok", 1.0)]
    metrics = _trainer(**FAST).train(str(tiny_model), examples, str(tmp_path), max_length=64)
    assert metrics["dropped"] == 1 and metrics["examples"] == 4


# ---- weights reach the loss -------------------------------------------------------------------


def _manual_weighted_loss(model, encoded, weights):
    total, count = 0.0, 0
    with torch.no_grad():
        for enc, w in zip(encoded, weights):
            ids = torch.tensor([enc.input_ids])
            labels = torch.tensor(enc.labels[1:])
            logits = model(ids).logits[0, :-1]
            mask = labels != -100
            ce = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
            total += w * ce.item()
            count += int(mask.sum())
    return total / count


def test_weights_scale_each_samples_loss(model, tokenizer, tmp_path):
    from tapir_trainers.collate import PadCollator, TrainDataset, encode_examples

    examples = _examples(3) + _mixed_examples(2)
    encoded, _ = encode_examples(tokenizer, examples, max_length=256)
    trainer = _core_trainer(model, tmp_path)
    collate = PadCollator(tokenizer.pad_token_id)
    w = [0.5, 1.0, 2.0, 0.25, 3.0]
    losses = []
    for scale in (1.0, 2.0):
        for enc, wi in zip(encoded, w):
            enc.weight = wi * scale
        batch = collate([TrainDataset(encoded)[i] for i in range(len(encoded))])
        n = int((batch["labels"][:, 1:] != -100).sum())
        model.eval()
        with torch.no_grad():
            losses.append(float(trainer.compute_loss(model, batch, num_items_in_batch=n)))
    expected = _manual_weighted_loss(model, encoded, w)
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[1] == pytest.approx(2 * expected, rel=1e-4)


def test_zero_weight_example_adds_no_gradient(model, tokenizer, tmp_path):
    from tapir_trainers.collate import PadCollator, TrainDataset, encode_examples

    encoded, _ = encode_examples(tokenizer, _examples(2) + _mixed_examples(1), max_length=256)
    encoded[0].weight, encoded[1].weight, encoded[2].weight = 1.0, 0.0, 0.0
    trainer = _core_trainer(model, tmp_path)
    collate = PadCollator(tokenizer.pad_token_id)
    data = TrainDataset(encoded)

    def grads(indices):
        model.zero_grad()
        batch = collate([data[i] for i in indices])
        trainer.compute_loss(model, batch, num_items_in_batch=10).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.train()
    alone, together = grads([0]), grads([0, 1, 2])
    model.zero_grad()
    assert any(g.abs().sum() > 0 for g in alone)
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_weights_are_used_as_given_unless_normalize_weights(tiny_model, tmp_path):
    """Default: weights reach the loss as given (Eq. 4: alpha_r, 1 - alpha_r), so 2w doubles the
    loss; normalize_weights=True rescales them to mean 1, so w and 2w train identically."""
    a = _trainer(**FAST).train(str(tiny_model), _examples(8, 1.0), str(tmp_path / "a"))
    b = _trainer(**FAST).train(str(tiny_model), _examples(8, 2.0), str(tmp_path / "b"))
    assert b["loss_history"][0][1] == pytest.approx(2 * a["loss_history"][0][1], rel=1e-5)
    assert b["weight_sum"] == 16.0 and b["normalize_weights"] is False
    an = _trainer(**FAST, normalize_weights=True).train(str(tiny_model), _examples(8, 0.3), str(tmp_path / "an"))
    bn = _trainer(**FAST, normalize_weights=True).train(str(tiny_model), _examples(8, 2.0), str(tmp_path / "bn"))
    assert an["train_loss"] == pytest.approx(bn["train_loss"], rel=1e-5)
    assert an["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    skewed = _examples(8)
    for i, ex in enumerate(skewed):
        ex.weight = 5.0 if i < 2 else 0.1
    c = _trainer(**FAST, normalize_weights=True).train(str(tiny_model), skewed, str(tmp_path / "c"))
    assert abs(c["train_loss"] - a["train_loss"]) > 1e-4


# ---- training, saving, loading --------------------------------------------------------------------


def test_loss_decreases_and_folder_loads_and_generates(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    out = tmp_path / "student"
    metrics = _trainer().train(
        str(tiny_model), _examples(4), str(out), batch_size=4, micro_batch_size=2, epochs=15, lr=1e-2,
        warmup_ratio=0.0, seed=0, save_steps=1000, keep_checkpoints=False,
        progress=lambda step, total, loss: seen.append((step, total, loss)),
    )
    assert not list(out.glob("checkpoint-*"))
    losses = [loss for _, loss in metrics["loss_history"]]
    assert metrics["steps"] == 15 and len(losses) == 15
    assert losses[-1] < 0.5 * losses[0]
    assert metrics["final_loss"] == losses[-1]
    assert seen[-1] == (15, 15, pytest.approx(losses[-1]))
    assert metrics["examples"] == 4 and metrics["epochs"] == pytest.approx(15.0)
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0 and 0 <= metrics["padding_fraction"] < 1
    assert metrics["resumed_from"] is None and metrics["world_size"] == 1
    assert metrics["grad_accum"] == 2 and metrics["batch_size"] == 4

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.use_cache is True
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 1 plus 1?"}],
                                     add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]


def test_lora_saves_merged_model_and_adapter(tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    metrics = _trainer(**FAST).train(str(tiny_model), _examples(8), str(out), lora={"r": 4, "alpha": 8})
    assert metrics["lora"] is True and metrics["lr"] == 1e-3
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and adapter_cfg["lora_alpha"] == 8
    assert not (out / "adapter_config.json").exists()  # the root is a plain merged model
    merged = load_file(str(out / "model.safetensors"))
    base = load_file(str(tiny_model / "model.safetensors"))
    assert set(merged) == set(base)  # no lora_A/lora_B keys left
    changed = [k for k in base if "q_proj" in k and not torch.equal(base[k], merged[k])]
    assert changed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache is True


def test_lora_default_lr():
    from tapir_trainers.hf_trainer import HFTrainer

    assert HFTrainer().options.lr == 2e-5
    assert HFTrainer(HFTrainer.Options(lora=True)).options.lr == 2e-4
    assert HFTrainer(HFTrainer.Options(lora=True)).options.lora.target_modules == "all-linear"
    assert HFTrainer(HFTrainer.Options(lora=False)).options.lora is None


# ---- resume ------------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


@pytest.mark.parametrize("extra", [{}, {"packing": True, "weighting": "sampling"}], ids=["default", "packed-sampled"])
def test_resume_after_interruption_matches_uninterrupted(tiny_model, tmp_path, extra):
    opts = dict(batch_size=2, micro_batch_size=2, epochs=2, lr=1e-3, seed=0, save_steps=4, **extra)
    full = _trainer(**opts).train(str(tiny_model), _examples(8), str(tmp_path / "full"))
    assert full["steps"] == 8

    def stop_at_5(step, total, loss):
        if step == 5:
            raise _Stop()

    out = tmp_path / "cut"
    with pytest.raises(_Stop):
        _trainer(**opts).train(str(tiny_model), _examples(8), str(out), progress=stop_at_5)
    assert (out / "checkpoint-4").is_dir() and not (out / "config.json").exists()
    resumed = _trainer(**opts).train(str(tiny_model), _examples(8), str(out))
    assert resumed["resumed_from"] == str(out / "checkpoint-4")
    assert resumed["steps"] == full["steps"] == 8
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], rel=1e-4)
    assert [s for s, _ in resumed["loss_history"]] == [5, 6, 7, 8]
    assert (out / "config.json").is_file()

    fresh = _trainer(**opts).train(str(tiny_model), _examples(8), str(tmp_path / "noresume"), resume=False)
    assert fresh["resumed_from"] is None


def test_never_resumes_another_jobs_checkpoint(tiny_model, tmp_path):
    """Measured in issue 12: a second training on other data resumed checkpoint-4 and ran 2 of 6
    steps. A folder's checkpoints are resumed only when its fingerprint (base model, examples,
    options) matches; otherwise the folder starts fresh."""
    opts = dict(batch_size=2, micro_batch_size=2, epochs=1, lr=1e-3, seed=0, save_steps=2)
    out = tmp_path / "round"
    first = _trainer(**opts).train(str(tiny_model), _examples(8), str(out))
    assert first["steps"] == 4 and (out / "checkpoint-4").is_dir()
    fp = json.loads((out / "tapir-train.json").read_text())
    assert fp["n_examples"] == 8 and fp["trainer"] == "hf"

    other = [TrainExample(e.prompt, e.response + " Indeed.", 1.0) for e in _examples(12)]
    second = _trainer(**opts).train(str(tiny_model), other, str(out))
    assert second["resumed_from"] is None and second["steps"] == 6  # all of its own steps
    assert json.loads((out / "tapir-train.json").read_text())["fingerprint"] != fp["fingerprint"]
    assert not (out / "checkpoint-4").exists() and (out / "checkpoint-6").is_dir()

    # other options that change what is learned: fresh too; options that don't (logging): same job
    third = _trainer(**{**opts, "lr": 5e-4}).train(str(tiny_model), other, str(out))
    assert third["resumed_from"] is None and third["steps"] == 6
    again = _trainer(**{**opts, "lr": 5e-4, "logging_steps": 3}).train(str(tiny_model), other, str(out))
    assert again["resumed_from"] == str(out / "checkpoint-6")

    # a checkpoint without a fingerprint (written by something else) is never resumed
    (out / "tapir-train.json").unlink()
    fourth = _trainer(**{**opts, "lr": 5e-4}).train(str(tiny_model), other, str(out))
    assert fourth["resumed_from"] is None and fourth["steps"] == 6


# ---- packing -------------------------------------------------------------------------------------------------


def test_pack_rows_balances_and_respects_capacity():
    from tapir_trainers.collate import pack_rows

    lengths = [120, 10, 30, 70, 64, 5, 90, 33]
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in row) for row in rows]
    assert max(loads) <= 128 and len(rows) == 4  # ceil(422 / 128)
    assert pack_rows([10, 10], 128) == [[0, 1]]


def test_packed_batch_sampler_packs_each_optimizer_step():
    from tapir_trainers.packing import EpochPermutationSampler, PackedBatchSampler

    lengths = [(i * 37) % 200 + 10 for i in range(70)]
    order = EpochPermutationSampler(70, seed=1)
    sampler = PackedBatchSampler(order, lengths, group_size=16, n_micro=4, capacity=256)
    micro = list(sampler)
    assert len(micro) == len(sampler) == 4 * 4 + 4  # 4 full steps, then 6 examples in 4 micro-batches
    drawn = list(order)
    for step in range(5):
        group = drawn[step * 16:(step + 1) * 16]
        got = [i for mb in micro[step * 4:(step + 1) * 4] for i in mb]
        assert sorted(got) == sorted(group)  # each step trains exactly its examples
    sampler.set_epoch(1)
    assert list(sampler) != micro


def test_packed_batch_gives_the_unpacked_loss(model, tokenizer, tmp_path):
    from tapir_trainers.collate import PackCollator, PadCollator, TrainDataset, encode_examples

    encoded, _ = encode_examples(tokenizer, _mixed_examples(6) + _examples(2), max_length=256)
    data = TrainDataset(encoded)
    features = [data[i] for i in range(len(data))]
    packed = PackCollator(tokenizer.pad_token_id, 256)(features)
    padded = PadCollator(tokenizer.pad_token_id)(features)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] < len(features)
    assert int(packed["real_tokens"]) == int(padded["real_tokens"]) == sum(len(e) for e in encoded)
    trainer = _core_trainer(model, tmp_path)
    model.eval()
    with torch.no_grad():
        n = int((padded["labels"][:, 1:] != -100).sum())
        assert int((packed["labels"][:, 1:] != -100).sum()) == n
        a = float(trainer.compute_loss(model, padded, num_items_in_batch=n))
        b = float(trainer.compute_loss(model, packed, num_items_in_batch=n))
    assert a == pytest.approx(b, rel=1e-4)  # block-diagonal attention: no example sees another


def test_packing_cuts_padding_and_matches_unpacked_training(tiny_model, tmp_path):
    opts = dict(batch_size=8, micro_batch_size=8, epochs=1, lr=1e-3, seed=0, max_length=256,
                group_by_length=False, save_steps=1000)
    data = _mixed_examples(32)
    plain = _trainer(**opts).train(str(tiny_model), data, str(tmp_path / "plain"))
    packed = _trainer(**opts).train(str(tiny_model), data, str(tmp_path / "packed"), packing=True)
    assert packed["padding_fraction"] < 0.10 < plain["padding_fraction"]
    assert packed["tokens"] == plain["tokens"]
    assert packed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-2)


# ---- weighted sampling -----------------------------------------------------------------------------------------


def test_weighted_sampler_draws_heavy_examples_more_often():
    from tapir_trainers.weighting import WeightedEpochSampler, normalise_weights

    weights = normalise_weights([1.0] * 8 + [4.0] * 2)
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    sampler = WeightedEpochSampler(weights, num_samples=1000, seed=3)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 1000
    heavy = sum(1 for i in draws if i >= 8) / 1000
    assert heavy == pytest.approx(8 / 16, abs=0.06)  # 2 * 4 of total weight 16
    assert list(WeightedEpochSampler(weights, 1000, seed=3)) == draws  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != draws  # a new draw each epoch


def test_sampling_weighting_trains(tiny_model, tmp_path):
    examples = _examples(8)
    for i, ex in enumerate(examples):
        ex.weight = 3.0 if i < 4 else 1.0
    metrics = _trainer(**FAST).train(str(tiny_model), examples, str(tmp_path), weighting="sampling")
    assert metrics["weighting"] == "sampling" and metrics["steps"] == 2 and metrics["examples"] == 8


def test_base_model_resolution(tiny_model, register_plugin, tmp_path):
    from tapir import hookimpl
    from tapir_trainers.hf_trainer import resolve_base_model

    class NamedTiny:
        @hookimpl
        def register_models(self, register):
            register("tiny-student", backend="hf", model=str(tiny_model), description="test")

    register_plugin(NamedTiny(), "named-tiny")
    assert resolve_base_model(str(tiny_model)) == str(tiny_model)
    assert resolve_base_model(f"hf:{tiny_model}") == str(tiny_model)
    assert resolve_base_model("tiny-student") == str(tiny_model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TapirError, match="no config.json"):
        resolve_base_model(str(tmp_path / "empty"))


# ---- length grouping for small sets -------------------------------------------------------------------------------


def test_length_grouped_sampler_sorts_whole_groups_and_is_a_seeded_permutation():
    from tapir_trainers.length_groups import LengthGroupedEpochSampler

    lengths = [10, 200, 30, 180, 50, 160, 70, 140, 90, 120, 110, 100, 130, 80, 150, 60]
    sampler = LengthGroupedEpochSampler(lengths, batch_size=4, group_batches=50, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(16))
    assert [lengths[k] for k in order] == sorted(lengths, reverse=True)  # one group: the whole set, sorted
    grouped = LengthGroupedEpochSampler(lengths, batch_size=4, group_batches=2, seed=3)
    first, second = grouped.order()[:8], grouped.order()[8:]
    assert [lengths[k] for k in first] == sorted((lengths[k] for k in first), reverse=True)
    assert [lengths[k] for k in second] == sorted((lengths[k] for k in second), reverse=True)
    assert lengths[first[0]] == 200  # the group with the longest example comes first
    grouped.set_epoch(1)
    assert grouped.order() != first + second


def test_length_group_batches_cuts_padding_of_a_small_set(tiny_model, tmp_path):
    opts = dict(batch_size=8, micro_batch_size=8, epochs=1, lr=1e-3, seed=0, max_length=256, save_steps=1000)
    data = _mixed_examples(32)
    hf_rule = _trainer(**opts).train(str(tiny_model), data, str(tmp_path / "hf"))
    grouped = _trainer(**opts).train(str(tiny_model), data, str(tmp_path / "grouped"), length_group_batches=50)
    assert grouped["tokens"] == hf_rule["tokens"] and grouped["steps"] == hf_rule["steps"] == 4
    assert grouped["padding_fraction"] < hf_rule["padding_fraction"] / 2, (grouped["padding_fraction"],
                                                                          hf_rule["padding_fraction"])


def test_logits_of_prompt_positions_are_left_out_with_the_same_loss_and_gradient(model, tokenizer, tmp_path):
    from tapir_trainers.collate import PadCollator, TrainDataset, encode_examples

    encoded, _ = encode_examples(tokenizer, _mixed_examples(4), max_length=256)
    data = TrainDataset(encoded)
    batch = PadCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    trainer = _core_trainer(model, tmp_path)
    first = trainer._first_learned_position(model, batch["labels"])
    assert trainer._keeps_logits and first > 0  # the prompts' positions need no logits
    model.train()
    results = []
    for keeps in (True, False):
        trainer._keeps_logits = keeps
        model.zero_grad()
        loss = trainer.compute_loss(model, batch, num_items_in_batch=100)
        loss.backward()
        grad = next(p.grad.clone() for p in model.parameters() if p.grad is not None)
        results.append((float(loss.detach()), grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
