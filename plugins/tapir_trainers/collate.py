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

Memory: a row keeps its token ids as one ``array('i')`` (4 bytes a token,
not a list of Python ints) and the length of its prompt (the labels follow:
-100 there, the ids after). Identical prompts are rendered and tokenised once
(task up-sampling repeats pairs), and identical (prompt, response) examples
share one id array. Rendering and tokenising go by :data:`CHUNK` texts at a
time, so the tokeniser's own per-call memory stays that of one chunk.
"""

from __future__ import annotations

import heapq
import math
from array import array
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


@dataclass(slots=True)
class Encoded:
    """One tokenised example: ``ids`` (shared by the rows of identical
    examples: never modify it in place) of which the first ``prompt_len``
    are not learned."""

    ids: array  # array('i') of token ids
    prompt_len: int
    weight: float
    index: int  # position in the caller's example list
    truncated: bool = False

    @property
    def input_ids(self) -> list[int]:
        return self.ids.tolist()

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.prompt_len + self.ids[self.prompt_len:].tolist()

    def label_array(self) -> array:
        """The labels as ``array('i')``: -100 for the prompt, the ids after."""
        return array("i", [IGNORE]) * self.prompt_len + self.ids[self.prompt_len:]

    def __len__(self) -> int:
        return len(self.ids)


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


CHUNK = 1024  # texts per chat-template render and per tokeniser call


def _ids(tokenizer, texts: Sequence[str]) -> list[array]:
    """Each text's token ids as ``array('i')``, :data:`CHUNK` texts per
    tokeniser call (one call over a whole round's texts holds the tokeniser's
    encodings and a list of Python ints per text all at once: at 70K prompts
    about 500 MB more peak RSS than by chunks)."""
    out: list[array] = []
    for at in range(0, len(texts), CHUNK):
        # Only the ids: building the masks costs as much again and nothing reads them.
        batch = tokenizer(list(texts[at:at + CHUNK]), add_special_tokens=False, return_attention_mask=False,
                          return_token_type_ids=False)["input_ids"]
        out += [array("i", ids) for ids in batch]
    return out


def _render(tokenizer, conversations: Sequence[list[dict]], add_generation_prompt: bool) -> list[str]:
    """The chat template applied to each conversation, a chunk per call (the
    template is prepared once per call, not once per example)."""
    out: list[str] = []
    for at in range(0, len(conversations), CHUNK):
        out += tokenizer.apply_chat_template(list(conversations[at:at + CHUNK]),
                                             add_generation_prompt=add_generation_prompt, tokenize=False)
    return out


def _conversation_key(messages: list[dict]) -> tuple | None:
    """What makes two prompts render the same: every message's items, in
    order; None when a value cannot be a key (a list content: never shared)."""
    try:
        key = tuple(tuple(m.items()) for m in messages)
        hash(key)
    except TypeError:
        return None
    return key


@dataclass
class PromptPass:
    """Every example's prompt rendered and tokenised: what decides which
    examples are dropped (a prompt of ``max_length`` tokens or more), so the
    kept examples, and their count, are known before any response is.
    Identical prompts are rendered and tokenised once: ``shape[i]`` is
    example ``i``'s index into the distinct ``conversations``, ``prompts``
    (rendered) and ``prompt_ids``."""

    conversations: list[list[dict]]
    prompts: list[str]
    prompt_ids: list[array]
    shape: list[int]  # example index -> distinct prompt index
    kept: list[int]  # example indices, in order
    dropped: list[int]
    max_length: int
    # (distinct prompt index, response) -> (ids, prompt_len, truncated): identical examples share a row's ids
    responses: dict[tuple[int, str], tuple[array, int, bool]] | None = None

    def release(self) -> None:
        """Drop what only tokenising more responses would read (rendered
        prompts, conversations, the shared-response index)."""
        self.conversations, self.prompts, self.responses = [], [], None


def encode_prompts(tokenizer, examples: Sequence[Any], max_length: int) -> PromptPass:
    """Render and tokenise the prompts of ``examples`` (first half of :func:`encode_examples`)."""
    if max_length < 2:
        raise TapirError(f"max_length must be at least 2, got {max_length}")
    ensure_chat_template(tokenizer)
    conversations: list[list[dict]] = []
    shape: list[int] = []
    seen: dict[tuple, int] = {}
    for i, ex in enumerate(examples):
        prompt = list(ex.prompt)
        if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
            raise TapirError(
                f"training example {i}: prompt must be a non-empty list of {{'role', 'content'}} messages"
            )
        key = _conversation_key(prompt)
        at = seen.get(key) if key is not None else None
        if at is None:
            at = len(conversations)
            conversations.append(prompt)
            if key is not None:
                seen[key] = at
        shape.append(at)
    del seen
    prompts = _render(tokenizer, conversations, add_generation_prompt=True)
    prompt_ids = _ids(tokenizer, prompts)
    kept = [i for i, s in enumerate(shape) if len(prompt_ids[s]) < max_length]
    dropped = [i for i, s in enumerate(shape) if len(prompt_ids[s]) >= max_length]
    return PromptPass(conversations, prompts, prompt_ids, shape, kept, dropped, max_length, {})


def _response_texts(tokenizer, prompts: PromptPass, pairs: Sequence[tuple[int, str]]) -> list[str]:
    """What the template puts after each pair's prompt for its response."""
    fulls = _render(tokenizer, [prompts.conversations[s] + [{"role": "assistant", "content": r}] for s, r in pairs],
                    add_generation_prompt=False)
    eos_text = tokenizer.eos_token or ""
    out = []
    for (s, r), f in zip(pairs, fulls):
        p = prompts.prompts[s]
        # Templates that render the assistant turn right after the generation prompt
        # (nearly all) give the response text as the suffix; otherwise fall back to
        # response + EOS.
        out.append(f[len(p):] if f.startswith(p) and len(f) > len(p) else r + eos_text)
    return out


def encode_responses(tokenizer, examples: Sequence[Any], prompts: PromptPass, indices: Sequence[int],
                     weights: Sequence[float]) -> list[Encoded]:
    """The :class:`Encoded` rows of the kept examples ``indices`` (example
    indices), with ``weights`` (one per index). Each distinct (prompt,
    response) not tokenised before is rendered and tokenised once, a chunk
    per call (second half of :func:`encode_examples`)."""
    if not indices:
        return []
    done = prompts.responses if prompts.responses is not None else {}
    pairs = [(prompts.shape[i], str(examples[i].response)) for i in indices]
    new = list(dict.fromkeys(p for p in pairs if p not in done))
    stops = end_of_turn_ids(tokenizer)
    eos_id = tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, int) else None
    max_length = prompts.max_length
    for at in range(0, len(new), CHUNK):
        chunk = new[at:at + CHUNK]
        for pair, r_ids in zip(chunk, _ids(tokenizer, _response_texts(tokenizer, prompts, chunk))):
            p_ids = prompts.prompt_ids[pair[0]]
            cut = next((k for k, t in enumerate(r_ids) if t in stops), None)
            if cut is not None:
                r_ids = r_ids[: cut + 1]
            elif eos_id is not None:
                r_ids = r_ids + array("i", [eos_id])
            ids = p_ids + r_ids
            done[pair] = (ids[:max_length], len(p_ids), len(ids) > max_length)
    return [Encoded(*done[pair][:2], float(weight), i, done[pair][2])
            for i, pair, weight in zip(indices, pairs, weights)]


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
        return {"input_ids": row.ids, "labels": row.label_array(), "weight": row.weight}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._feature(self.rows[i])

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = self.on_read.many(indices) if self.on_read is not None else [self.rows[i] for i in indices]
        return [self._feature(r) for r in rows]


def _long(ids):
    """A row's ids or labels (a list, or ``array('i')`` as :class:`TrainDataset`
    gives them) as a new int64 tensor."""
    import torch

    if isinstance(ids, array) and ids.itemsize == 4 and len(ids):
        return torch.frombuffer(ids, dtype=torch.int32).to(torch.long)
    return torch.tensor(list(ids) if isinstance(ids, array) else ids, dtype=torch.long)


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
            input_ids[r, :k] = _long(f["input_ids"])
            labels[r, :k] = _long(f["labels"])
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
                input_ids[r, at:at + k] = _long(f["input_ids"])
                row_labels = _long(f["labels"])
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
