"""The ``trl`` trainer: TRL's ``SFTTrainer`` with tapir's example weighting
and response-only loss (``pip install 'tapir-distill[trl]'``).

What TRL does: the training loop and config (``SFTConfig``), dataset
preparation of a tokenised dataset, its padding collator, and its loss — the
fused LM head (per-token log-probabilities computed in chunks without
materialising the logits), normalised by the learned tokens of the whole
accumulated batch on all ranks — plus its metrics (entropy, token accuracy).

What tapir adds, so that both trainers learn exactly the same thing:

* the examples are tokenised by tapir (:func:`tapir_trainers.collate.encode_examples`):
  the same prompt tokens generation sees, labels ``-100`` on the prompt, the
  response cut after the end-of-turn token. TRL's own prompt-completion
  tokenisation would also learn the template's trailing newline;
* each example's weight multiplies its tokens' log-probabilities before TRL
  sums them (a forward hook on the model), so the loss of a step is
  ``sum(weight x token cross-entropy) / learned tokens`` as in the ``hf`` trainer.

Packing and weighted sampling are ``hf`` trainer features only.
"""

from __future__ import annotations

from typing import Any

from .base import BaseTrainer, training_arguments
from .options import TrainOptions


class TRLTrainer(BaseTrainer):
    """Fine-tunes a causal LM with ``trl.SFTTrainer``; the same ``train`` call and metrics as ``hf``."""

    name = "trl"

    class Options(TrainOptions):
        pass

    def _train_here(self, base_model, examples, output_dir, opts, progress, callbacks) -> dict[str, Any]:
        from trl import SFTConfig

        from .trainer_core import MetricsCallback

        # Every row goes into a datasets.Dataset before training.
        job = self._prepare(base_model, examples, output_dir, opts,
                            sampler_reads="trl's trainer takes a datasets.Dataset of every row")
        group_by_length = True if opts.group_by_length is None else opts.group_by_length
        kwargs = training_arguments(opts, job.out, job.micro, job.grad_accum, job.world_size, group_by_length)
        kwargs.update(
            gradient_checkpointing=bool(opts.gradient_checkpointing),  # SFTConfig defaults it to True
            max_length=int(opts.max_length),
            packing=False,
            shuffle_dataset=False,  # the Trainer's sampler shuffles, as in the hf trainer
            dataset_num_proc=None,
        )
        import warnings

        with warnings.catch_warnings():  # gradient_checkpointing: its deprecation warning, not ours
            warnings.simplefilter("ignore", FutureWarning)
            args = SFTConfig(**kwargs)
        resumed_from, model = self._claim_and_load(job, examples, opts, args)

        metrics_cb = MetricsCallback()
        trainer = build_sft_trainer(model, args, job.tokenizer, job.encoded, job.weights,
                                    self._callbacks(metrics_cb, callbacks, progress))
        return {
            **self._run(trainer, job, opts, metrics_cb, examples, resumed_from),
            "packing": False,
            "weighting": "loss",
            "trainer": "trl",
        }


def build_sft_trainer(model, args, tokenizer, encoded, weights, callbacks=()):
    """An ``SFTTrainer`` over tapir-tokenised rows with per-example loss weights."""
    import datasets

    cls = weighted_sft_trainer_class()
    data = datasets.Dataset.from_dict({
        "input_ids": [r.input_ids for r in encoded],
        "labels": [r.labels for r in encoded],
        "weight": [float(w) for w in weights],
    })
    return cls(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=list(callbacks))


_CLASS = None


def weighted_sft_trainer_class():
    """``SFTTrainer`` subclass (built on first use: it imports trl and torch)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import torch
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            base = self.data_collator

            def collate(features):
                weights = [float(f.pop("weight")) for f in features]
                batch = base(features)
                width = batch["labels"].shape[1]
                batch["token_weights"] = torch.tensor(weights, dtype=torch.float32)[:, None].expand(-1, width)
                mask = batch.get("attention_mask")
                batch["real_tokens"] = mask.sum() if mask is not None else torch.tensor(batch["input_ids"].numel())
                return batch

            self.data_collator = collate
            self._token_weights = None
            self._real = torch.zeros((), dtype=torch.long)
            self._all = 0
            self.model.register_forward_hook(self._weigh_log_probs)

        def _weigh_log_probs(self, module, inputs, output):
            # TRL sums -log_probs (B, T-1, aligned with labels[:, 1:]); weigh them per example.
            w = self._token_weights
            if w is not None and getattr(output, "log_probs", None) is not None:
                output.log_probs = output.log_probs * w[:, 1:].to(output.log_probs.device, output.log_probs.dtype)
            return output

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            self._token_weights = inputs.pop("token_weights", None)
            real = inputs.pop("real_tokens", None)
            if model.training:
                if real is not None:
                    self._real = self._real + real.detach().to("cpu")
                self._all += int(inputs["input_ids"].numel())
            try:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            finally:
                self._token_weights = None

        def token_counts(self) -> tuple[int, int]:
            counts = torch.tensor([float(self._real), float(self._all)], device=self.args.device)
            if self.accelerator.num_processes > 1:
                counts = self.accelerator.reduce(counts, reduction="sum")
            return int(counts[0].item()), int(counts[1].item())

        def _save_checkpoint(self, model, trial):  # no TRL model card in every checkpoint
            return super(SFTTrainer, self)._save_checkpoint(model, trial)

    _CLASS = WeightedSFTTrainer
    return _CLASS
