"""Training backends: transformers full fine-tuning and LoRA (peft), and TRL's SFTTrainer.

Registered lazily: listing plugins never imports torch, transformers or trl.
"""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_trainers(register):
    register(
        "hf",
        "tapir_trainers.hf_trainer:HFTrainer",
        description="transformers Trainer: full fine-tuning or LoRA, response-only loss, per-sample weights "
        "or weighted sampling, packing; launches itself under torchrun / accelerate (DeepSpeed, FSDP)",
        requires=("torch", "transformers"),
        extra="local",
        capabilities="tapir_trainers.capabilities:HF",
    )
    register(
        "trl",
        "tapir_trainers.trl_trainer:TRLTrainer",
        description="TRL SFTTrainer with tapir's response-only labels and per-sample loss weights; "
        "same options and launchers as hf (no packing or weighted sampling)",
        requires=("torch", "transformers", "trl"),
        extra="trl",
        capabilities="tapir_trainers.capabilities:TRL",
    )
