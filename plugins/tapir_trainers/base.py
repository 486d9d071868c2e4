"""What the ``hf`` and ``trl`` trainers share: :class:`BaseTrainer` (options,
the ``train`` entry point that validates per-call overrides and hands off to a
launcher or to the subclass's ``_train_here``, the training loop glue of
:meth:`BaseTrainer._run`, and the ``steps_for`` capability) and the set-up
helpers both call (tokenising, ``TrainingArguments``, claiming the output
folder, loading the model, saving, metrics).

Imports torch / transformers only inside functions.
"""

from __future__ import annotations

import gc
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError

from .base_model import resolve_base_model
from .options import TrainOptions
from .weighting import normalise_weights, validate_weights

__all__ = ["BaseTrainer", "resolve_base_model"]


@dataclass
class Job:
    """One training job's set-up, before its transformers trainer is built."""

    out: Path
    model_path: str
    tokenizer: Any
    encoded: Any  # TrainRows: the kept examples, tokenised up front or when read
    dropped: list
    weights: list[float]
    world_size: int
    micro: int
    grad_accum: int
    same_job: bool  # ``out`` held this job's files before any rank touched it


class BaseTrainer:
    """A trainer of (prompt, response, weight) examples (tapir.roles.Trainer).

    A subclass sets ``name`` and ``Options`` (a :class:`TrainOptions`) and
    implements ``_train_here(base_model, examples, output_dir, opts, progress,
    callbacks)``, the job in this process; usually it builds its transformers
    trainer and returns :meth:`_run`'s metrics.
    """

    name = "base"
    Options = TrainOptions

    def __init__(self, options: TrainOptions | None = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def steps_for(cls, options: TrainOptions, n_examples: int) -> int | None:
        """Optimizer steps of one run on ``n_examples`` examples (the
        ``steps_for`` capability, tapir.roles.Stepping): ``max_steps`` when
        set, else batches per epoch x epochs; a batch is ``total_batch_size``
        examples, or micro-batch x accumulation on one process when
        ``gradient_accumulation_steps`` is given)."""
        if int(options.max_steps) > 0:
            return int(options.max_steps)
        if options.gradient_accumulation_steps is None:
            per_step = max(1, int(options.total_batch_size))
        else:
            micro, grad_accum = options.batch_arithmetic(1)
            per_step = max(1, micro * grad_accum)
        return math.ceil(n_examples / per_step) * math.ceil(float(options.num_train_epochs))

    @classmethod
    def max_length(cls, options: TrainOptions) -> int | None:
        """Tokens per example (the ``max_length`` capability,
        tapir.roles.Bounded): a prompt this long is dropped."""
        return int(options.max_length)

    def train(self, base_model: str, examples: Sequence[Any], output_dir: str, *, progress=None,
              callbacks: Sequence[Any] = (), **overrides: Any) -> dict[str, Any]:
        """Fine-tune ``base_model`` on ``examples``; save a loadable folder in ``output_dir``.

        ``progress(step, total, loss)`` is called at each logged loss (in this
        process only; launched workers log to ``output_dir/train.log``);
        ``callbacks`` are extra transformers ``TrainerCallback`` objects;
        ``overrides`` are options for this call only.

        Returns metrics: train_loss, steps, epochs, examples, dropped, tokens
        (non-padding tokens seen, all ranks), tokens_per_s, padding_fraction,
        seconds, resumed_from, world_size, batch_size, grad_accum, final_loss,
        loss_history, weight_sum, launcher.
        """
        opts = _resolve(self.options, overrides)
        if not examples:
            raise TapirError("no training examples given")
        if opts.launcher != "none":
            from .launch import launch

            return launch(self, base_model, examples, output_dir, opts)
        return self._train_here(base_model, examples, output_dir, opts, progress, callbacks)

    def _train_here(self, base_model, examples, output_dir, opts, progress, callbacks) -> dict[str, Any]:
        """Train in this process (one rank); each trainer (HFTrainer, TRLTrainer) supplies its own."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _train_here")

    def _prepare(self, base_model: str, examples: Sequence[Any], output_dir: str, opts, *,
                 sampler_reads: str | None) -> Job:
        """The set-up every job does first: the base model's folder, the seed,
        the examples' prompts tokenised (which decides the kept ones, with
        their weights), the batch arithmetic for this world size, and whether
        ``output_dir`` is this job's already.

        The responses are tokenised here too, unless the trainer's sampler
        only draws indices (``sampler_reads`` None; else why it reads every
        row) and ``max_steps`` reads fewer rows than the set holds: then each
        row is tokenised when the data loader first fetches it
        (:mod:`tapir_trainers.train_rows`)."""
        from transformers import set_seed

        from .train_rows import read_all_reason

        out = Path(output_dir)
        model_path = resolve_base_model(base_model)
        set_seed(int(opts.seed))
        tokenizer, encoded, dropped, weights = prepare_examples(model_path, examples, opts)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        micro, grad_accum = opts.batch_arithmetic(world_size)
        needed = int(opts.max_steps) * micro * grad_accum * world_size
        encoded.read_all_reason = sampler_reads or read_all_reason(opts, needed=needed, available=len(encoded))
        if encoded.read_all_reason is not None:
            encoded.tokenize_all()
        same_job = _same_job_before_init(self.name, out, model_path, examples, opts)
        return Job(out, model_path, tokenizer, encoded, dropped, weights, world_size, micro, grad_accum, same_job)

    def _claim_and_load(self, job: Job, examples: Sequence[Any], opts, args):
        """Claim the output folder for the job (the checkpoint to resume, or
        None) and load the model to train: ``(resumed_from, model)``."""
        resumed_from = claim_output_dir(self.name, job.out, job.model_path, examples, opts, args, job.same_job)
        return resumed_from, load_model_for_training(job.model_path, opts)

    @staticmethod
    def _callbacks(metrics_cb, callbacks: Sequence[Any], progress, *more: Any) -> list[Any]:
        """The callbacks of a job: metrics first, the caller's, ``more``, then progress."""
        from .trainer_core import ProgressCallbackFn, TqdmCallback

        return [metrics_cb, *callbacks, *more, ProgressCallbackFn(progress) if progress is not None else TqdmCallback()]

    @staticmethod
    def _run(trainer, job: Job, opts, metrics_cb, examples, resumed_from) -> dict[str, Any]:
        """Train (resuming ``resumed_from``), save the final folder, and return the job's metrics."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for noisy in (PrinterCallback, ProgressCallback):  # they print a dict per logged step
            trainer.remove_callback(noisy)
        start = time.perf_counter()
        with frozen_heap():
            result = trainer.train(resume_from_checkpoint=resumed_from)
        seconds = time.perf_counter() - start
        real, total = trainer.token_counts()
        finish(trainer, job.tokenizer, job.out, opts)
        return job_metrics(trainer, result, metrics_cb, opts, job.encoded, job.dropped, examples, real, total,
                           seconds, resumed_from, job.micro, job.grad_accum, job.out)


@contextmanager
def frozen_heap():
    """Train with the objects alive now (the examples, their rows, the
    model's modules: millions at paper scale) left out of the garbage
    collector's walks: ``Trainer.train`` starts with accelerate's
    ``free_memory``, whose ``gc.collect()`` walked them all (1.6 s a training
    at 10K examples), and every automatic full collection while training
    would again. Objects made while training are collected as usual; the
    frozen ones go back to the collector afterwards (garbage among them with
    them: no ``gc.collect()`` first, which would cost the walk it saves)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _resolve(options, overrides: dict[str, Any]):
    from tapir.errors import ConfigError
    from pydantic import ValidationError

    if not overrides:
        return options
    try:
        return options.merged(overrides)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"train() overrides: {exc}") from exc


def prepare_examples(model_path: str, examples: Sequence[Any], opts):
    """``(tokenizer, rows, dropped, weights)``: the examples as
    :class:`~tapir_trainers.train_rows.TrainRows` (prompts tokenised; the
    responses, with response-only labels, when asked or read), and the
    weights of the kept ones as the loss sees them (as given, or rescaled to
    mean 1 with ``normalize_weights``)."""
    from transformers import AutoTokenizer

    from .train_rows import TrainRows

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise TapirError(f"tokenizer of {model_path} has neither a pad nor an EOS token; set one in its "
                         f"tokenizer_config.json")
    validate_weights([float(getattr(e, "weight", 1.0)) for e in examples])  # before tokenising
    rows = TrainRows.of(tokenizer, examples, int(opts.max_length))
    if not len(rows):
        raise TapirError(f"all {len(examples)} examples have prompts of max_length={opts.max_length} "
                         f"tokens or more; raise max_length or shorten the prompts")
    weights = list(rows.weights)
    validate_weights(weights)
    if opts.normalize_weights:
        weights = normalise_weights(weights)
    return tokenizer, rows, rows.dropped, weights


def training_arguments(opts, out: Path, micro: int, grad_accum: int, world_size: int,
                       group_by_length: bool) -> dict[str, Any]:
    """``TrainingArguments`` keyword arguments for ``opts``."""
    import torch

    on_cuda = torch.cuda.is_available()
    bf16, fp16 = opts.mixed_precision(on_cuda)
    save_strategy, save_steps = ("steps", int(opts.save_steps)) if opts.save_steps else ("epoch", 500)
    kwargs: dict[str, Any] = dict(
        output_dir=str(out),
        learning_rate=opts.lr,
        warmup_steps=float(opts.warmup_ratio),  # a float < 1 is a ratio of the total steps (transformers 5)
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=float(opts.num_train_epochs),
        max_steps=int(opts.max_steps),
        lr_scheduler_type=opts.lr_scheduler_type,
        weight_decay=float(opts.weight_decay),
        max_grad_norm=float(opts.max_grad_norm),
        seed=int(opts.seed),
        data_seed=int(opts.seed),
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=opts.save_total_limit,
        logging_strategy="steps",
        logging_steps=int(opts.logging_steps),
        report_to=opts.report_to,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        activation_checkpointing=bool(opts.gradient_checkpointing),
        bf16=bf16,
        fp16=fp16,
        use_cpu=not on_cuda,
        ddp_backend="gloo" if world_size > 1 and not on_cuda else None,
        dataloader_num_workers=int(opts.dataloader_num_workers),
        disable_tqdm=True,  # our own bar (TqdmCallback) or the progress callback instead
    )
    if opts.deepspeed:
        kwargs["deepspeed"] = opts.deepspeed
    if opts.fsdp:
        kwargs["fsdp"] = opts.fsdp
        if opts.fsdp_config is not None:
            kwargs["fsdp_config"] = opts.fsdp_config
    return kwargs


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _same_job_before_init(trainer_name, out: Path, model_path, examples, opts) -> bool:
    """Whether ``out`` holds this job's files, read by every rank before any rank changes the folder."""
    from .jobdir import fingerprint, matches

    return matches(out, fingerprint(trainer_name, model_path, examples, opts))


def claim_output_dir(trainer_name, out: Path, model_path, examples, opts, args, same_job: bool):
    """Make ``out`` this job's folder (main process; the others wait) and
    return the checkpoint to resume from: this job's last one, or ``None``.
    A folder of another job (other data, base model or options) is cleaned."""
    from transformers.trainer_utils import get_last_checkpoint

    from .jobdir import claim, fingerprint

    _ = args.device  # sets up the process group under torchrun / accelerate
    _barrier()
    if _is_main():
        claim(out, fingerprint(trainer_name, model_path, examples, opts))
    _barrier()
    if not (same_job and opts.resume and out.is_dir()):
        return None
    return get_last_checkpoint(str(out))


def load_model_for_training(model_path: str, opts):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.float32, attn_implementation=opts.attn_implementation)
    if opts.lora is not None:
        model = _wrap_lora(model, opts.lora, opts.gradient_checkpointing)
    return model


def finish(trainer, tokenizer, out: Path, opts) -> None:
    """Save the final folder on the main process; drop checkpoints if asked."""
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        _save(trainer, tokenizer, out, opts.lora is not None)
        if not opts.keep_checkpoints:
            import shutil

            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def job_metrics(trainer, result, metrics_cb, opts, encoded, dropped, examples, real, total, seconds,
                resumed_from, micro, grad_accum, out) -> dict[str, Any]:
    history = metrics_cb.losses
    world = int(trainer.args.world_size)
    return {
        "train_loss": float(result.training_loss),
        "final_loss": history[-1][1] if history else None,
        "loss_history": history,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "examples": len(encoded),
        "dropped": len(dropped),
        "truncated": encoded.truncated,  # of the rows tokenised
        "tokenized_rows": encoded.tokenized,
        "tokenized_all_because": encoded.read_all_reason or "",
        "weight_sum": float(sum(float(getattr(e, "weight", 1.0)) for e in examples)),
        "normalize_weights": bool(opts.normalize_weights),
        "tokens": int(real),
        "tokens_per_s": real / seconds if seconds > 0 else 0.0,
        "padding_fraction": 1.0 - real / total if total else 0.0,
        "seconds": seconds,
        "resumed_from": resumed_from,
        "world_size": world,
        "batch_size": micro * grad_accum * world,
        "micro_batch_size": micro,
        "grad_accum": grad_accum,
        "lr": opts.lr,
        "lora": opts.lora is not None,
        "launcher": "none",
        "output_dir": str(out),
    }


def _wrap_lora(model, lora, gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(lora.r),
        lora_alpha=int(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def _save(trainer, tokenizer, out: Path, lora: bool) -> None:
    """Write the final model (merged when LoRA) and tokenizer into ``out``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model.save_pretrained(str(out / "adapter"))
        tokenizer.save_pretrained(str(out / "adapter"))
        model = model.merge_and_unload()
    model.config.use_cache = True  # Trainer turns it off; generation is ~7x slower without it
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = True
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

