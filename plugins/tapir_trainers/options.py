"""Declared options of the trainers, with transformers' ``TrainingArguments`` names.

:class:`TrainOptions` is shared by the ``hf`` and ``trl`` trainers. Names are
the ones users of transformers, TRL, axolotl or LLaMA-Factory know
(``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``,
``gradient_accumulation_steps``, ...). The short names of earlier tapir
versions stay as documented aliases (:data:`ALIASES`); giving an alias and its
name together is an error.

Launch options (``launcher``, ``nproc_per_node``, ...) make ``train()`` start
``torchrun`` / ``accelerate launch`` of a worker instead of training in the
calling process (see :mod:`tapir_trainers.launch`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from tapir.options import Options, option

# alias -> canonical name
ALIASES: dict[str, str] = {
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "micro_batch_size": "per_device_train_batch_size",
    "batch_size": "total_batch_size",
}

# Options that change how a job is started or reported, never what it learns:
# left out of the job fingerprint (tapir_trainers.jobdir), so changing them
# still resumes the job's own checkpoints.
NOT_IN_FINGERPRINT = frozenset({
    "resume", "keep_checkpoints", "save_steps", "save_total_limit", "logging_steps", "report_to",
    "dataloader_num_workers", "launcher", "nproc_per_node", "nnodes", "rdzv_endpoint", "launch_prefix",
    "accelerate_config",
})

LAUNCH_FIELDS = ("launcher", "nproc_per_node", "nnodes", "rdzv_endpoint", "launch_prefix", "accelerate_config")


def canonical(values: dict[str, Any] | None, where: str = "trainer options") -> dict[str, Any]:
    """``values`` with aliases replaced by their names; an alias given with its name is an error."""
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = ALIASES.get(key, key)
        if name != key and name in (values or {}):
            raise ValueError(f"{where}: '{key}' is an alias of '{name}'; give one of them, not both")
        out[name] = value
    return out


class LoraOptions(Options):
    """LoRA adapters (peft). The final folder holds the merged model; the adapter is saved in ``adapter/``."""

    r: int = option(16, "LoRA rank", ge=1)
    alpha: int = option(32, "LoRA alpha (the update is scaled by alpha / r)", ge=1)
    dropout: float = option(0.05, "dropout on the LoRA inputs", ge=0.0, lt=1.0)
    target_modules: str | list[str] = option("all-linear", "modules that get adapters ('all-linear' or a list of names)")


class TrainOptions(Options):
    """What every tapir trainer accepts (the ``hf`` trainer adds packing and weighted sampling)."""

    # --- optimisation (TrainingArguments names) ---
    learning_rate: float | None = option(
        None, "peak learning rate; default 2e-5 for full fine-tuning (paper), 2e-4 with LoRA (alias: lr)", gt=0)
    num_train_epochs: float = option(3.0, "passes over the data; max_steps > 0 overrides (alias: epochs)", gt=0)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: num_train_epochs decides)")
    per_device_train_batch_size: int = option(
        8, "examples per device per forward pass (alias: micro_batch_size)", ge=1)
    gradient_accumulation_steps: int | None = option(
        None, "micro-batches per optimizer step; default derived from total_batch_size", ge=1)
    total_batch_size: int = option(
        32, "effective batch, examples per optimizer step on all devices: gradient_accumulation_steps = "
            "total / (per_device x world size); ignored when gradient_accumulation_steps is given "
            "(alias: batch_size)", ge=1)
    warmup_ratio: float = option(0.03, "linear warm-up as a fraction of all steps", ge=0.0, le=1.0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0.0)
    lr_scheduler_type: str = option("cosine", "transformers scheduler name (cosine, linear, constant, ...)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables)", ge=0.0)
    seed: int = option(42, "seed of model init (LoRA), data order and weighted sampling")
    bf16: bool | None = option(None, "bf16 mixed precision; default: on for GPUs that support it, off on CPU")
    fp16: bool | None = option(None, "fp16 mixed precision; default: on for GPUs without bf16, off on CPU")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    # --- data ---
    max_length: int = option(2048, "tokens per example; longer examples are cut, prompts this long dropped", ge=2)
    normalize_weights: bool = option(
        False, "rescale the examples' weights to mean 1 before training; default false: weights reach the "
               "loss exactly as given (Eq. 4's alpha_r and 1 - alpha_r)")
    group_by_length: bool | None = option(
        None, "batches of similar lengths (less padding); default true unless packing or weighted sampling")
    lora: LoraOptions | None = option(None, "LoRA: true for the defaults or a mapping of r, alpha, dropout, "
                                            "target_modules; false/null: full fine-tuning")
    attn_implementation: str = option("sdpa", "attention kernel passed to from_pretrained ('flash_attention_2', "
                                              "'eager', ...)")
    # --- checkpoints ---
    save_steps: int | None = option(None, "checkpoint every N steps; default a checkpoint at the end of each epoch",
                                    ge=1)
    save_total_limit: int | None = option(1, "checkpoints kept in output_dir", ge=1)
    keep_checkpoints: bool = option(True, "false: delete checkpoint-* once the final model is saved")
    resume: bool = option(True, "continue from this same job's last checkpoint-* (never another job's)")
    # --- logging ---
    logging_steps: int = option(1, "log the loss every N steps", ge=1)
    report_to: str | list[str] = option("none", "transformers integrations to report to (wandb, tensorboard, ...)")
    dataloader_num_workers: int = option(0, "DataLoader worker processes", ge=0)
    # --- scale-out ---
    launcher: Literal["none", "torchrun", "accelerate"] = option(
        "none", "none: train in this process; torchrun / accelerate: train() launches that many worker "
                "processes and waits for them")
    nproc_per_node: int | None = option(
        None, "worker processes per node under a launcher; default the visible GPUs, else 1", ge=1)
    nnodes: int = option(1, "nodes of a launched job (each node runs the launcher, e.g. through launch_prefix)",
                         ge=1)
    rdzv_endpoint: str | None = option(None, "host:port of the rendezvous when nnodes > 1 (torchrun c10d / "
                                             "accelerate main process)")
    launch_prefix: list[str] = option(
        [], "command put before the launcher, e.g. ['srun', '--ntasks-per-node=1'] to start it on every node")
    accelerate_config: str | None = option(None, "accelerate config file for launcher=accelerate "
                                                 "(accelerate launch --config_file)")
    deepspeed: str | None = option(None, "DeepSpeed config (a ZeRO json path), passed to TrainingArguments; "
                                         "needs pip install deepspeed")
    fsdp: str | None = option(None, "transformers' fsdp string, e.g. 'full_shard auto_wrap'")
    fsdp_config: dict[str, Any] | str | None = option(None, "transformers' fsdp_config (a mapping or a json path)")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = canonical(data)
            if data.get("total_batch_size") is not None and data.get("gradient_accumulation_steps") is not None:
                raise ValueError("give total_batch_size (batch_size) or gradient_accumulation_steps, not both")
        return data

    @field_validator("lora", mode="before")
    @classmethod
    def _lora(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _checks(self):
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 cannot both be true")
        if self.nnodes > 1 and self.launcher != "none" and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint (host:port of the first node)")
        return self

    # --- resolved values -------------------------------------------------------------

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 2e-4 if self.lora is not None else 2e-5

    def batch_arithmetic(self, world_size: int) -> tuple[int, int]:
        """(per-device micro-batch, gradient accumulation) for ``world_size`` processes."""
        if self.gradient_accumulation_steps is not None:
            return self.per_device_train_batch_size, self.gradient_accumulation_steps
        total = self.total_batch_size
        micro = max(1, min(self.per_device_train_batch_size, -(-total // world_size)))
        return micro, max(1, round(total / (micro * world_size)))

    def mixed_precision(self, on_cuda: bool) -> tuple[bool, bool]:
        """(bf16, fp16) autocast flags; weights stay fp32 (master copy)."""
        if self.bf16 is None and self.fp16 is None:
            if not on_cuda:
                return False, False  # bf16 on CPU is ~100x slower than fp32
            import torch

            bf16 = torch.cuda.is_bf16_supported()
            return bf16, not bf16
        return bool(self.bf16), bool(self.fp16)

    def merged(self, overrides: dict[str, Any]):
        """These options with per-call ``overrides`` (aliases allowed) applied, validated."""
        base = self.model_dump(exclude_unset=True)
        over = canonical(overrides, "train() overrides")
        if "gradient_accumulation_steps" in over:
            base.pop("total_batch_size", None)
        if "total_batch_size" in over:
            base.pop("gradient_accumulation_steps", None)
        return type(self).model_validate({**base, **over})
