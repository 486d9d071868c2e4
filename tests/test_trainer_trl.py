"""The ``trl`` trainer (TRL's SFTTrainer) against tapir's ``hf`` trainer on the
tiny model: same weighted, response-only loss on the same batch; same training."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")

from tapir.roles import TrainExample  # noqa: E402


def _examples(n: int = 8) -> list[TrainExample]:
    out = []
    for i in range(n):
        words = " ".join(["step"] * (2 + (i * 5) % 17))
        # Eq. 4 style weights, not renormalised
        out.append(TrainExample([{"role": "user", "content": f"What is {i} plus {i}?"}],
                                f"{words} the answer is {2 * i}.", 0.3 if i % 3 else 0.7))
    return out


def _trainer(name, **options):
    from tapir.plugins import registry

    return registry().get("trainers", name).create(options=options)


def test_trl_registered_with_the_same_options():
    from tapir.plugins import registry

    comp = registry().get("trainers", "trl")
    assert comp.factory == "tapir_trainers.trl_trainer:TRLTrainer" and comp.available
    t = comp.create(options={"learning_rate": 1e-4, "per_device_train_batch_size": 2, "lora": True})
    assert t.options.lr == 1e-4 and t.options.lora.r == 16
    with pytest.raises(Exception, match="packing"):
        comp.create(options={"packing": True})  # an hf-trainer feature


def test_same_loss_as_hf_trainer_on_the_same_batch(tiny_model, tmp_path):
    """Both trainers' compute_loss on one batch (mixed lengths, weights 0.3/0.7) agree to 1e-5,
    and equal sum(w * ce) / learned tokens computed by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from trl import SFTConfig

    from tapir_trainers.collate import PadCollator, TrainDataset, encode_examples
    from tapir_trainers.trainer_core import WeightedLossTrainer
    from tapir_trainers.trl_trainer import build_sft_trainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.eval()
    encoded, _ = encode_examples(tok, _examples(6), max_length=256)
    weights = [e.weight for e in encoded]

    ours = WeightedLossTrainer(model=model, args=TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", remove_unused_columns=False))
    batch_ours = PadCollator(tok.pad_token_id)([TrainDataset(encoded)[i] for i in range(len(encoded))])
    n = int((batch_ours["labels"][:, 1:] != -100).sum())

    trl_model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trl_model.eval()
    args = SFTConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, report_to="none", remove_unused_columns=False,
                     bf16=False, gradient_checkpointing=False, max_length=256, shuffle_dataset=False)
    theirs = build_sft_trainer(trl_model, args, tok, encoded, weights)
    rows = [dict(theirs.train_dataset[i]) for i in range(len(encoded))]
    batch_trl = theirs.data_collator(rows)
    assert torch.equal(batch_trl["labels"], batch_ours["labels"])
    assert torch.equal(batch_trl["token_weights"] * (batch_ours["attention_mask"] > 0), batch_ours["token_weights"])

    with torch.no_grad():
        a = float(ours.compute_loss(model, batch_ours, num_items_in_batch=n))
        b = float(theirs.compute_loss(trl_model, batch_trl, num_items_in_batch=n))
        # by hand: sum over examples of w * sum of its token cross-entropies, / learned tokens
        total = 0.0
        for enc, w in zip(encoded, weights):
            logits = model(torch.tensor([enc.input_ids])).logits[0, :-1]
            labels = torch.tensor(enc.labels[1:])
            mask = labels != -100
            total += w * float(torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum"))
    assert a == pytest.approx(b, rel=1e-5)
    assert a == pytest.approx(total / n, rel=1e-5)
    # unweighted (all 1.0) it is TRL's own loss: the hook changes nothing
    for r in rows:
        r["weight"] = 1.0
    with torch.no_grad():
        plain = float(theirs.compute_loss(trl_model, theirs.data_collator([dict(r) for r in rows]),
                                          num_items_in_batch=n))
        unhooked = float(super(type(theirs), theirs).compute_loss(
            trl_model, {k: v for k, v in theirs.data_collator([dict(r) for r in rows]).items()
                        if k not in ("token_weights", "real_tokens")}, num_items_in_batch=n))
    assert plain == pytest.approx(unhooked, rel=1e-6)


def test_trl_training_matches_hf_training(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    opts = dict(batch_size=4, micro_batch_size=2, epochs=1, lr=1e-3, seed=0, save_steps=1000, max_length=128)
    hf = _trainer("hf", **opts).train(str(tiny_model), _examples(8), str(tmp_path / "hf"))
    trl = _trainer("trl", **opts).train(str(tiny_model), _examples(8), str(tmp_path / "trl"))
    assert trl["trainer"] == "trl" and trl["steps"] == hf["steps"] == 2
    assert trl["tokens"] == hf["tokens"] > 0
    for (s1, l1), (s2, l2) in zip(hf["loss_history"], trl["loss_history"]):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "trl")
    assert model.config.use_cache is True
