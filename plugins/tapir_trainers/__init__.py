"""Training backends: transformers full fine-tuning and LoRA (peft)."""
