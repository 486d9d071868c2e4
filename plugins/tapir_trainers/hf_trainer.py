"""The ``hf`` trainer: transformers ``Trainer`` with response-only, per-sample
weighted loss, LoRA (peft), packing, checkpoints and resume.

Two ways to scale out:

* ``launcher: torchrun | accelerate`` (the pipeline's way): ``train()``, called
  once in the orchestrating process, writes the examples to a file, launches
  the workers (:mod:`tapir_trainers.launch`), waits and returns their metrics;
* a script run under ``torchrun`` / ``accelerate launch`` yourself: every rank
  calls :meth:`HFTrainer.train` with the same arguments; ``Trainer`` wraps the
  model in DDP, shards the batches, and only the main process writes the
  final folder.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from tapir.options import option

from .base import BaseTrainer, resolve_base_model, training_arguments
from .options import TrainOptions
from .weighting import WEIGHTINGS

__all__ = ["HFTrainer", "resolve_base_model", "training_arguments"]


class HFTrainer(BaseTrainer):
    """Fine-tunes a causal LM on (prompt, response, weight) examples.

    ``HFTrainer(options)`` sets the options of every :meth:`train` call;
    ``train(..., **overrides)`` overrides some of them for one call. See
    :class:`HFTrainer.Options` and docs/training.md.
    """

    name = "hf"

    class Options(TrainOptions):
        weighting: str = option("loss", "how example weights act: 'loss' (each token loss x weight) or 'sampling' "
                                        "(examples drawn with probability proportional to weight)")
        packing: bool = option(False, "pack several examples per row (block-diagonal attention, no cross-talk)")
        pack_length: int | None = option(None, "row capacity in tokens when packing; default max_length", ge=2)
        length_group_batches: int | None = option(
            None, "with group_by_length: sort this many batches by length at a time (more: less padding, batches "
                  "less random); null: transformers' rule, min(50, a quarter of the set's batches)", ge=1)

        @model_validator(mode="after")
        def _weighting(self):
            if self.weighting not in WEIGHTINGS:
                raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
            return self

    def _train_here(self, base_model, examples, output_dir, opts, progress, callbacks) -> dict[str, Any]:
        from transformers import TrainingArguments

        from .collate import PackCollator, PadCollator, TrainDataset
        from .length_groups import LengthGroupedEpochSampler
        from .packing import EpochPermutationSampler, PackedBatchSampler
        from .train_rows import sampler_reads
        from .trainer_core import EpochCallback, MetricsCallback, WeightedLossTrainer
        from .weighting import WeightedEpochSampler

        group_by_length = opts.group_by_length
        if group_by_length is None:
            group_by_length = not opts.packing and opts.weighting != "sampling"
        job = self._prepare(base_model, examples, output_dir, opts,
                            sampler_reads=sampler_reads(group_by_length=group_by_length, packing=opts.packing))
        encoded, weights, micro, grad_accum = job.encoded, job.weights, job.micro, job.grad_accum
        encoded.set_weights(weights if opts.weighting == "loss" else [1.0] * len(weights))
        dataset = TrainDataset(encoded)
        args = TrainingArguments(**training_arguments(opts, job.out, micro, grad_accum, job.world_size,
                                                      group_by_length))
        resumed_from, model = self._claim_and_load(job, examples, opts, args)
        pack_length = int(opts.pack_length or opts.max_length)
        if opts.packing:
            collator = PackCollator(job.tokenizer.pad_token_id, pack_length)
        else:
            collator = PadCollator(job.tokenizer.pad_token_id)
        sampler = batch_sampler = None
        if opts.weighting == "sampling":
            sampler = WeightedEpochSampler(weights, len(encoded), int(opts.seed))
        elif group_by_length and not opts.packing and opts.length_group_batches:
            sampler = LengthGroupedEpochSampler([len(r) for r in encoded], micro * grad_accum * job.world_size,
                                                int(opts.length_group_batches), int(opts.seed))
        if opts.packing:
            order = sampler if sampler is not None else EpochPermutationSampler(len(encoded), int(opts.seed))
            batch_sampler = PackedBatchSampler(
                order, [len(r) for r in encoded], group_size=micro * grad_accum * job.world_size,
                n_micro=grad_accum * job.world_size, capacity=pack_length)

        metrics_cb = MetricsCallback()
        epoch_sampler = batch_sampler if batch_sampler is not None else sampler
        all_callbacks = self._callbacks(metrics_cb, callbacks, progress,
                                        *([EpochCallback(epoch_sampler)] if epoch_sampler is not None else []))
        trainer = WeightedLossTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=job.tokenizer,
            callbacks=all_callbacks,
            weighted_sampler=sampler,
            batch_sampler=batch_sampler,
        )
        return {
            **self._run(trainer, job, opts, metrics_cb, examples, resumed_from),
            "packing": bool(opts.packing),
            "weighting": opts.weighting,
        }
