"""Helpers for tests, here and in third-party plugins.

:func:`build_tiny_model` writes a tiny random Llama with a byte-level BPE
tokenizer trained locally (``tokenizers``) and a chat template: a real
transformers folder that loads, generates and trains offline in seconds.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Explain why the sky is blue in one sentence.",
    "Write a Python function that returns the square of a number.",
    "What is 12 times 12? The answer is 144.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Give three tips for staying healthy: sleep, exercise, eat well.",
    "Translate 'good morning' into Spanish: buenos dias.",
    "def add(a, b):\n    return a + b\n",
    "Step 1: read the problem. Step 2: solve it. Step 3: check the answer.",
    "Rating: [[7]] Score of Assistant 1: 8 Score of Assistant 2: 6",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;()[]{}",
]


def build_tiny_model(path: str | Path, *, vocab_size: int = 512, hidden_size: int = 32, layers: int = 2,
                     seed: int = 0) -> Path:
    """Write a tiny random causal LM folder at ``path`` and return it.

    Cheap to call repeatedly: an existing complete folder is reused.
    """
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)
    return path
