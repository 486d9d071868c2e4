"""Tokenisation with response-only labels, padding and packing collators.

An example becomes ``prompt_ids + response_ids``:

* ``prompt_ids``: the chat template applied to the prompt messages with
  ``add_generation_prompt=True`` — exactly what a backend feeds the model at
  generation time. Their labels are ``-100``.
* ``response_ids``: what the template puts after the prompt for the assistant
  turn, cut just after the end-of-turn token (``<|im_end|>``, ``<|eot_id|>``,
  or the tokenizer's EOS). These are learned, end-of-turn included, so the
  student learns to stop.

Tokenising the prompt on its own (not as a prefix of the full conversation)
makes training see the same prompt tokens generation sees.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Sequence

from tapir.errors import TapirError

IGNORE = -100

# Used when a tokenizer has no chat template (base models such as GPT-2): the
# ChatML layout, saved with the trained model so generation uses it too.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")


@dataclass
class Encoded:
    """One tokenised example."""

    input_ids: list[int]
    labels: list[int]
    weight: float
    index: int  # position in the caller's example list
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` a ChatML chat template if it has none.

    Returns True when the default template was installed.
    """
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def end_of_turn_ids(tokenizer) -> set[int]:
    """Token ids that end an assistant turn for this tokenizer."""
    ids: set[int] = set()
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    for token in _END_OF_TURN_TOKENS:
        if token in vocab:
            ids.add(vocab[token])
    return ids


def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # Only the ids: building the masks costs as much again and nothing reads them.
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False)["input_ids"]


def _render(tokenizer, conversations: list[list[dict]], add_generation_prompt: bool) -> list[str]:
    """The chat template applied to each conversation, in one call (the
    template is prepared once, not once per example)."""
    if not conversations:
        return []
    return list(tokenizer.apply_chat_template(conversations, add_generation_prompt=add_generation_prompt,
                                              tokenize=False))


@dataclass
class PromptPass:
    """Every example's prompt rendered and tokenised: what decides which
    examples are dropped (a prompt of ``max_length`` tokens or more), so the
    kept examples, and their count, are known before any response is."""

    conversations: list[list[dict]]
    prompts: list[str]
    prompt_ids: list[list[int]]
    kept: list[int]  # example indices, in order
    dropped: list[int]
    max_length: int


def encode_prompts(tokenizer, examples: Sequence[Any], max_length: int) -> PromptPass:
    """Render and tokenise the prompts of ``examples`` (first half of :func:`encode_examples`)."""
    if max_length < 2:
        raise TapirError(f"max_length must be at least 2, got {max_length}")
    ensure_chat_template(tokenizer)
    conversations: list[list[dict]] = []
    for i, ex in enumerate(examples):
        prompt = list(ex.prompt)
        if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
            raise TapirError(
                f"training example {i}: prompt must be a non-empty list of {{'role', 'content'}} messages"
            )
        conversations.append(prompt)
    prompts = _render(tokenizer, conversations, add_generation_prompt=True)
    prompt_ids = _ids(tokenizer, prompts)
    kept = [i for i, p in enumerate(prompt_ids) if len(p) < max_length]
    dropped = [i for i, p in enumerate(prompt_ids) if len(p) >= max_length]
    return PromptPass(conversations, prompts, prompt_ids, kept, dropped, max_length)


def encode_responses(tokenizer, examples: Sequence[Any], prompts: PromptPass, indices: Sequence[int],
                     weights: Sequence[float]) -> list[Encoded]:
    """The :class:`Encoded` rows of the kept examples ``indices`` (example
    indices), with ``weights`` (one per index), in one render and one
    tokeniser call (second half of :func:`encode_examples`)."""
    if not indices:
        return []
    fulls = _render(tokenizer, [prompts.conversations[i] + [{"role": "assistant", "content": str(examples[i].response)}]
                                for i in indices], add_generation_prompt=False)
    eos_text = tokenizer.eos_token or ""
    responses = []
    for i, f in zip(indices, fulls):
        p = prompts.prompts[i]
        # Templates that render the assistant turn right after the generation prompt
        # (nearly all) give the response text as the suffix; otherwise fall back to
        # response + EOS.
        responses.append(f[len(p):] if f.startswith(p) and len(f) > len(p) else str(examples[i].response) + eos_text)
    response_ids = _ids(tokenizer, responses)
    stops = end_of_turn_ids(tokenizer)
    eos_id = tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, int) else None
    max_length = prompts.max_length
    encoded: list[Encoded] = []
    for i, r_ids, weight in zip(indices, response_ids, weights):
        p_ids = prompts.prompt_ids[i]
        cut = next((k for k, t in enumerate(r_ids) if t in stops), None)
        if cut is not None:
            r_ids = r_ids[: cut + 1]
        elif eos_id is not None:
            r_ids = list(r_ids) + [eos_id]
        ids = list(p_ids) + list(r_ids)
        labels = [IGNORE] * len(p_ids) + list(r_ids)
        truncated = len(ids) > max_length
        encoded.append(Encoded(ids[:max_length], labels[:max_length], float(weight), i, truncated))
    return encoded


def encode_examples(tokenizer, examples: Sequence[Any], max_length: int,
                    weights: Sequence[float] | None = None) -> tuple[list[Encoded], list[int]]:
    """Tokenise ``examples`` (objects with ``prompt``, ``response``, ``weight``).

    Returns ``(encoded, dropped)``: ``dropped`` lists the indices of examples
    whose prompt alone fills ``max_length`` (nothing left to learn). Longer
    examples are truncated to ``max_length`` (the response is cut).
    ``weights`` overrides the examples' own weights (already normalised).
    """
    prompts = encode_prompts(tokenizer, examples, max_length)
    row_weights = [float(weights[i]) if weights is not None else float(getattr(examples[i], "weight", 1.0))
                   for i in prompts.kept]
    return encode_responses(tokenizer, examples, prompts, prompts.kept, row_weights), prompts.dropped


class RowsOnRead:
    """Rows that may be tokenised when first read (implemented by
    :class:`~tapir_trainers.train_rows.TrainRows`): ``many(indices)`` gives
    several rows at once, so a micro-batch is one tokeniser call."""

    def many(self, indices: Sequence[int]) -> list[Encoded]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, j: int) -> Encoded:
        raise NotImplementedError


class TrainDataset:
    """A map-style dataset of :class:`Encoded` rows as dicts the collators
    read. ``rows`` is a list, or :class:`RowsOnRead` whose rows of a
    micro-batch are fetched together (``__getitems__``, which torch's data
    loader calls with a micro-batch's indices)."""

    def __init__(self, rows: Sequence[Encoded] | RowsOnRead):
        self.on_read = rows if isinstance(rows, RowsOnRead) else None
        self.rows = rows if self.on_read is not None else list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def _feature(row: Encoded) -> dict[str, Any]:
        return {"input_ids": row.input_ids, "labels": row.labels, "weight": row.weight}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._feature(self.rows[i])

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = self.on_read.many(indices) if self.on_read is not None else [self.rows[i] for i in indices]
        return [self._feature(r) for r in rows]


class PadCollator:
    """Right-pads a micro-batch to its longest example (``pad_to_multiple_of`` optional)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = int(math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        weights = torch.zeros((n, width), dtype=torch.float32)
        for r, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[r, :k] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[r, :k] = torch.tensor(f["labels"], dtype=torch.long)
            attention[r, :k] = 1
            weights[r, :k] = float(f["weight"])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "token_weights": weights,
            "real_tokens": attention.sum(),
        }


def pack_rows(lengths: Sequence[int], capacity: int, n_rows: int | None = None) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens,
    balancing the rows' lengths (longest first onto the lightest row), so that
    padding the rows to the longest one wastes little.

    Starts from ``n_rows`` rows (default: as few as the total length allows)
    and adds rows while an example would overflow. Empty rows are left out.
    """
    if not lengths:
        return []
    if max(lengths) > capacity:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n_rows = max(1, n_rows or math.ceil(sum(lengths) / capacity))
    while True:
        heap = [(0, r) for r in range(n_rows)]
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        fits = True
        for i in order:
            load, r = heapq.heappop(heap)
            if load + lengths[i] > capacity:
                fits = False
                break
            rows[r].append(i)
            heapq.heappush(heap, (load + lengths[i], r))
        if fits:
            return [sorted(row) for row in rows if row]
        n_rows += 1


class PackCollator:
    """Packs a micro-batch's examples into rows of at most ``capacity`` tokens.

    Each row concatenates several examples; ``position_ids`` restart at 0 for
    every example and no ``attention_mask`` is passed, which transformers
    (5.x ``masking_utils``) turns into a block-diagonal causal mask for sdpa
    and eager attention (flash-attention uses the same position_ids), so no
    example attends to another. The row tail is padding with its own
    position run and label -100. Labels are never learned across an example
    boundary: the first token of every example is a prompt token (-100).
    """

    def __init__(self, pad_token_id: int, capacity: int):
        self.pad_token_id = pad_token_id
        self.capacity = int(capacity)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        rows = pack_rows(lengths, max(self.capacity, max(lengths)))
        width = max(sum(lengths[i] for i in row) for row in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        positions = torch.zeros((n, width), dtype=torch.long)
        weights = torch.zeros((n, width), dtype=torch.float32)
        real = 0
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                f, k = features[i], lengths[i]
                input_ids[r, at:at + k] = torch.tensor(f["input_ids"], dtype=torch.long)
                row_labels = torch.tensor(f["labels"], dtype=torch.long)
                row_labels[0] = IGNORE  # never learn across a boundary
                labels[r, at:at + k] = row_labels
                positions[r, at:at + k] = torch.arange(k)
                weights[r, at:at + k] = float(f["weight"])
                at += k
            real += at
            if at < width:
                positions[r, at:] = torch.arange(width - at)
        return {
            "input_ids": input_ids,
            "position_ids": positions,
            "labels": labels,
            "token_weights": weights,
            "real_tokens": torch.tensor(real),
        }
