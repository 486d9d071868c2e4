"""The ``hf`` trainer: transformers ``Trainer`` with response-only, per-sample
weighted loss, LoRA (peft), packing, checkpoints and resume.

Runs unchanged under ``accelerate launch`` and ``torchrun``: every rank calls
:meth:`HFTrainer.train` with the same arguments; ``Trainer`` wraps the model in
DDP, shards the batches, and only the main process writes the final folder.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError

from .weighting import WEIGHTINGS, WeightedEpochSampler, normalise_weights

DEFAULT_LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}

# Defaults from the TAPIR paper where it gives them (lr, warm-up, batch, epochs, length).
DEFAULTS: dict[str, Any] = {
    "lr": None,  # 2e-5 full fine-tuning (paper), 2e-4 with LoRA
    "warmup_ratio": 0.03,
    "batch_size": 32,
    "micro_batch_size": 8,
    "epochs": 3,
    "max_length": 2048,
    "lora": False,
    "weighting": "loss",
    "packing": False,
    "pack_length": None,  # row capacity when packing; default max_length
    "group_by_length": None,  # default: True unless packing or weighted sampling
    "seed": 42,
    "save_steps": None,  # None: a checkpoint at the end of every epoch
    "save_total_limit": 1,
    "keep_checkpoints": True,  # False: delete checkpoint-* once the final folder is saved
    "resume": True,
    "dtype": "auto",  # fp32 on CPU; bf16 mixed precision on GPUs that support it
    "gradient_checkpointing": False,
    "weight_decay": 0.0,
    "lr_scheduler_type": "cosine",
    "max_steps": -1,
    "logging_steps": 1,
    "progress": None,  # callable(step, total, loss)
    "callbacks": (),  # extra transformers TrainerCallback objects
    "attn_implementation": "sdpa",
    "dataloader_num_workers": 0,
    "report_to": "none",
}


def resolve_base_model(base_model: str) -> str:
    """A local folder for ``base_model``: a folder path, ``embedded:NAME``, or a named model id.

    Anything else is passed through to ``from_pretrained`` (a hub id).
    """
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TapirError(f"base model folder {path} has no config.json; point at a transformers model folder")
        return str(path)
    if base_model.startswith("embedded:"):
        from tapir_hf.embedded import embedded_model_path

        return str(embedded_model_path(base_model.partition(":")[2]))
    if base_model.startswith("hf:"):
        return resolve_base_model(base_model[3:])
    from tapir.plugins import get_plugin_manager

    if base_model in get_plugin_manager().registry.by_role["models"]:
        from tapir.models import resolve

        spec = resolve(base_model)
        if spec.backend != "hf":
            raise TapirError(f"model '{base_model}' is served by the '{spec.backend}' backend; "
                             f"the hf trainer needs a transformers model (a folder, hub id or hf model)")
        return resolve_base_model(spec.name)
    return base_model


class HFTrainer:
    """Fine-tunes a causal LM on (prompt, response, weight) examples.

    ``HFTrainer(**options)`` sets defaults for every :meth:`train` call;
    ``train(..., **overrides)`` overrides them per call. See ``DEFAULTS`` and
    docs/training.md for the options.
    """

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise TapirError(f"unknown hf trainer option(s): {', '.join(unknown)}. "
                             f"Known: {', '.join(sorted(DEFAULTS))}")
        self.options = {**DEFAULTS, **options}

    # ---- option handling -------------------------------------------------------

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise TapirError(f"unknown hf trainer option(s): {', '.join(unknown)}. "
                             f"Known: {', '.join(sorted(DEFAULTS))}")
        opts = {**self.options, **overrides}
        if opts["weighting"] not in WEIGHTINGS:
            raise TapirError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {opts['weighting']!r}")
        lora = opts["lora"]
        if lora is True:
            opts["lora"] = dict(DEFAULT_LORA)
        elif isinstance(lora, dict):
            bad = sorted(set(lora) - set(DEFAULT_LORA))
            if bad:
                raise TapirError(f"unknown lora option(s): {', '.join(bad)}. Known: {', '.join(DEFAULT_LORA)}")
            opts["lora"] = {**DEFAULT_LORA, **lora}
        elif lora not in (False, None):
            raise TapirError(f"lora must be false, true or a dict of {', '.join(DEFAULT_LORA)}; got {lora!r}")
        if opts["lr"] is None:
            opts["lr"] = 2e-4 if opts["lora"] else 2e-5
        if opts["group_by_length"] is None:
            opts["group_by_length"] = not opts["packing"] and opts["weighting"] != "sampling"
        for key in ("batch_size", "micro_batch_size", "max_length"):
            if int(opts[key]) < 1:
                raise TapirError(f"{key} must be >= 1, got {opts[key]}")
        return opts

    # ---- the job -----------------------------------------------------------------

    def train(self, base_model: str, examples: Sequence[Any], output_dir: str, **overrides: Any) -> dict[str, Any]:
        """Fine-tune ``base_model`` on ``examples``; save a loadable folder in ``output_dir``.

        Returns metrics: train_loss, steps, epochs, examples, dropped, tokens
        (non-padding tokens seen, all ranks), tokens_per_s, padding_fraction,
        seconds, resumed_from, world_size, batch_size, grad_accum, final_loss,
        loss_history.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed
        from transformers.trainer_utils import get_last_checkpoint

        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from .collate import PackCollator, PadCollator, TrainDataset, encode_examples
        from .packing import EpochPermutationSampler, PackedBatchSampler
        from .trainer_core import EpochCallback, MetricsCallback, ProgressCallbackFn, TqdmCallback, WeightedLossTrainer

        opts = self._options(overrides)
        if not examples:
            raise TapirError("no training examples given")
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model_path = resolve_base_model(base_model)
        set_seed(int(opts["seed"]))

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.pad_token_id is None:
            raise TapirError(f"tokenizer of {model_path} has neither a pad nor an EOS token; set one in its "
                             f"tokenizer_config.json")

        normalise_weights([float(getattr(e, "weight", 1.0)) for e in examples])  # validate before tokenising
        encoded, dropped = encode_examples(tokenizer, examples, int(opts["max_length"]))
        if not encoded:
            raise TapirError(f"all {len(examples)} examples have prompts of max_length={opts['max_length']} "
                             f"tokens or more; raise max_length or shorten the prompts")
        # Normalised over the examples that are trained on: mean weight 1.
        normalised = normalise_weights([row.weight for row in encoded])
        for row, weight in zip(encoded, normalised):
            row.weight = weight if opts["weighting"] == "loss" else 1.0
        dataset = TrainDataset(encoded)

        # ---- the batch arithmetic: effective batch = micro x world x accumulation
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        micro = max(1, min(int(opts["micro_batch_size"]), math.ceil(int(opts["batch_size"]) / world_size)))
        grad_accum = max(1, round(int(opts["batch_size"]) / (micro * world_size)))

        on_cuda = torch.cuda.is_available()
        bf16, fp16 = _mixed_precision(str(opts["dtype"]), on_cuda)

        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation=opts["attn_implementation"])
        if opts["lora"]:
            model = _wrap_lora(model, opts["lora"], opts["gradient_checkpointing"])

        save_strategy, save_steps = ("steps", int(opts["save_steps"])) if opts["save_steps"] else ("epoch", 500)
        args = TrainingArguments(
            output_dir=str(out),
            learning_rate=float(opts["lr"]),
            warmup_steps=float(opts["warmup_ratio"]),  # a float < 1 is a ratio of the total steps
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=grad_accum,
            num_train_epochs=float(opts["epochs"]),
            max_steps=int(opts["max_steps"]),
            lr_scheduler_type=opts["lr_scheduler_type"],
            weight_decay=float(opts["weight_decay"]),
            seed=int(opts["seed"]),
            data_seed=int(opts["seed"]),
            save_strategy=save_strategy,
            save_steps=save_steps,
            save_total_limit=opts["save_total_limit"],
            logging_strategy="steps",
            logging_steps=int(opts["logging_steps"]),
            report_to=opts["report_to"],
            remove_unused_columns=False,
            train_sampling_strategy="group_by_length" if opts["group_by_length"] else "random",
            activation_checkpointing=bool(opts["gradient_checkpointing"]),
            bf16=bf16,
            fp16=fp16,
            use_cpu=not on_cuda,
            ddp_backend="gloo" if world_size > 1 and not on_cuda else None,
            dataloader_num_workers=int(opts["dataloader_num_workers"]),
            disable_tqdm=True,  # our own bar (TqdmCallback) or the progress callback instead
        )

        if opts["packing"]:
            collator = PackCollator(tokenizer.pad_token_id, int(opts["pack_length"] or opts["max_length"]))
        else:
            collator = PadCollator(tokenizer.pad_token_id)
        sampler = batch_sampler = None
        if opts["weighting"] == "sampling":
            sampler = WeightedEpochSampler(normalised, len(encoded), int(opts["seed"]))
        if opts["packing"]:
            order = sampler if sampler is not None else EpochPermutationSampler(len(encoded), int(opts["seed"]))
            batch_sampler = PackedBatchSampler(
                order, [len(r) for r in encoded], group_size=micro * grad_accum * world_size,
                n_micro=grad_accum * world_size, capacity=int(opts["pack_length"] or opts["max_length"]))

        metrics_cb = MetricsCallback()
        callbacks: list[Any] = [metrics_cb, *opts["callbacks"]]
        epoch_sampler = batch_sampler if batch_sampler is not None else sampler
        if epoch_sampler is not None:
            callbacks.append(EpochCallback(epoch_sampler))
        callbacks.append(ProgressCallbackFn(opts["progress"]) if opts["progress"] is not None else TqdmCallback())
        trainer = WeightedLossTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=callbacks,
            weighted_sampler=sampler,
            batch_sampler=batch_sampler,
        )
        for noisy in (PrinterCallback, ProgressCallback):  # they print a dict per logged step
            trainer.remove_callback(noisy)

        resumed_from = get_last_checkpoint(str(out)) if opts["resume"] and out.is_dir() else None
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resumed_from)
        seconds = time.perf_counter() - start

        real, total = trainer.token_counts()
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            _save(trainer, tokenizer, out, bool(opts["lora"]))
            if not opts["keep_checkpoints"]:
                import shutil

                for ckpt in out.glob("checkpoint-*"):
                    shutil.rmtree(ckpt, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()

        history = metrics_cb.losses
        return {
            "train_loss": float(result.training_loss),
            "final_loss": history[-1][1] if history else None,
            "loss_history": history,
            "steps": int(trainer.state.global_step),
            "epochs": float(trainer.state.epoch or 0.0),
            "examples": len(encoded),
            "dropped": len(dropped),
            "truncated": sum(1 for r in encoded if r.truncated),
            "tokens": int(real),
            "tokens_per_s": real / seconds if seconds > 0 else 0.0,
            "padding_fraction": 1.0 - real / total if total else 0.0,
            "seconds": seconds,
            "resumed_from": resumed_from,
            "world_size": int(trainer.args.world_size),
            "batch_size": micro * grad_accum * int(trainer.args.world_size),
            "micro_batch_size": micro,
            "grad_accum": grad_accum,
            "lr": float(opts["lr"]),
            "lora": bool(opts["lora"]),
            "packing": bool(opts["packing"]),
            "weighting": opts["weighting"],
            "output_dir": str(out),
        }


def _mixed_precision(dtype: str, on_cuda: bool) -> tuple[bool, bool]:
    """(bf16, fp16) autocast flags; weights stay fp32 (master copy)."""
    if dtype == "auto":
        if not on_cuda:
            return False, False  # bf16 on CPU is ~100x slower than fp32
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return bf16, not bf16
    if dtype in ("bf16", "bfloat16"):
        return True, False
    if dtype in ("fp16", "float16"):
        return False, True
    if dtype in ("fp32", "float32"):
        return False, False
    raise TapirError(f"dtype must be auto, fp32, bf16 or fp16; got {dtype!r}")


def _wrap_lora(model, lora: dict[str, Any], gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=lora["target_modules"],
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

