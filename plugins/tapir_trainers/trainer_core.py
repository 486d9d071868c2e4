"""The ``transformers.Trainer`` subclass and callbacks behind :class:`HFTrainer`.

Imported only when training starts (it imports torch and transformers).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

IGNORE = -100


def weighted_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                        token_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over learned tokens of ``weight * cross-entropy``, and the count of learned tokens.

    Position ``t`` predicts ``labels[t + 1]``; the weight is the target token's
    (its example's) weight. Labels of ``-100`` are not learned.
    """
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                         ignore_index=IGNORE, reduction="none")
    mask = targets.reshape(-1) != IGNORE
    if token_weights is not None:
        ce = ce * token_weights[:, 1:].reshape(-1).to(ce.dtype)
    return (ce * mask).sum(), mask.sum()


class WeightedLossTrainer(Trainer):
    """``Trainer`` with a per-token weighted loss on the response tokens.

    The loss of an optimizer step is ``sum(w * ce) / N`` where ``N`` counts the
    learned tokens of the whole accumulated batch on all ranks (transformers'
    ``num_items_in_batch``), so gradient accumulation and data parallelism give
    the same update as one big batch.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, weighted_sampler=None, batch_sampler=None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._batch_sampler = batch_sampler
        # Our compute_loss normalises by num_items_in_batch: make Trainer always count it.
        self.model_accepts_loss_kwargs = True
        self._weighted_sampler = weighted_sampler
        self._real_tokens = torch.zeros((), dtype=torch.long)
        self._all_tokens = 0
        self._keeps_logits: bool | None = None  # whether the model's forward takes logits_to_keep

    def get_train_dataloader(self):
        if self._batch_sampler is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self._batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        if self._weighted_sampler is not None:
            return self._weighted_sampler
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        weights = inputs.pop("token_weights", None)
        real = inputs.pop("real_tokens", None)
        first = self._first_learned_position(model, labels)
        if first:
            # Logits only from the batch's first learned target on: the prompt positions before it
            # need no vocabulary projection (the same loss for less compute and memory).
            outputs = model(**inputs, use_cache=False, logits_to_keep=labels.size(1) - first)
            labels = labels[:, first:]
            weights = weights[:, first:] if weights is not None else None
        else:
            outputs = model(**inputs, use_cache=False)
        loss_sum, count = weighted_token_loss(outputs.logits, labels, weights)
        if num_items_in_batch is not None:
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                # DDP averages gradients over ranks; N already counts every rank's tokens.
                loss = loss * self.accelerator.num_processes
        else:
            loss = loss_sum / count.clamp(min=1)
            if model.training:
                loss = loss / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
        if model.training:
            if real is not None:
                self._real_tokens = self._real_tokens + real.detach().to("cpu")
            self._all_tokens += int(inputs["input_ids"].numel())
        return (loss, outputs) if return_outputs else loss

    def _first_learned_position(self, model, labels: torch.Tensor) -> int:
        """The first position whose prediction is learned in any row (0: keep
        every logit, also when the model cannot leave logits out)."""
        if self._keeps_logits is None:
            import inspect

            base = self.accelerator.unwrap_model(model)
            if hasattr(base, "get_base_model"):  # a PEFT model passes the argument on to its base model
                base = base.get_base_model()
            self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        learned = (labels[:, 1:] != IGNORE).any(0).nonzero()
        return int(learned[0]) if self._keeps_logits and len(learned) else 0

    def token_counts(self) -> tuple[int, int]:
        """(non-padding tokens, all token positions) trained on, summed over ranks."""
        counts = torch.tensor([float(self._real_tokens), float(self._all_tokens)], device=self.args.device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return int(counts[0].item()), int(counts[1].item())


class EpochCallback(TrainerCallback):
    """Tells our samplers which epoch starts, resumed runs included.

    (After a resume, accelerate's batch-skipping wrapper hides the sampler from
    ``set_epoch``; ``on_epoch_begin`` runs before the epoch's first batch.)
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-6)))


class MetricsCallback(TrainerCallback):
    """Keeps ``(step, loss)`` of every logged training loss."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((int(state.global_step), float(logs["loss"])))


class ProgressCallbackFn(TrainerCallback):
    """Calls ``fn(step, total_steps, loss)`` on the main process at each logged loss."""

    def __init__(self, fn: Callable[[int, int, float], None]):
        self.fn = fn

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            self.fn(int(state.global_step), int(state.max_steps), float(logs["loss"]))


class TqdmCallback(TrainerCallback):
    """One tqdm bar over optimizer steps with the latest loss as postfix (main process only).

    Unlike transformers' own bar it prints no line per logged step.
    Silenced by ``TQDM_DISABLE=1``.
    """

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
