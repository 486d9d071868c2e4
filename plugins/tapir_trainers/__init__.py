"""Training backends: transformers full fine-tuning and LoRA (peft).

Registered lazily: listing plugins never imports torch or transformers.
"""

from __future__ import annotations

from tapir import hookimpl


@hookimpl
def register_trainers(register):
    register(
        "hf",
        "tapir_trainers.hf_trainer:HFTrainer",
        description="transformers Trainer: full fine-tuning or LoRA, response-only loss, per-sample weights "
        "or weighted sampling, packing; runs under accelerate launch / torchrun",
        requires=("torch", "transformers"),
        extra="local",
    )
