"""The kept training examples as the sampler indexes them, tokenised all at
once or only when read.

With ``max_steps`` a run reads ``max_steps x micro-batch x accumulation x
world size`` examples (a little more: the data loader reads one micro-batch
ahead), which at paper scale is a small part of the set. When the sampler
draws indices without reading lengths (random order or weighted sampling,
no packing, no ``group_by_length``), :class:`TrainRows` tokenises a
response only when the data loader first fetches its row, a micro-batch per
tokeniser call. The sampler, the dataset's length and every row are those
of the whole set tokenised at once (the prompts of every example are
tokenised first: they decide which examples are dropped, hence the index
space), so the batches trained on are the same.

Samplers that read every row's length (transformers' LengthGroupedSampler
puts the longest example first, which takes every length; packing plans rows
from lengths) get every row tokenised up front, and :func:`read_all_reason`
says why (:func:`sampler_reads`, :func:`read_all_reason`; the train
stage's info gives it as ``tokenized_all_because``, next to
``tokenized_rows`` of ``examples``).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from .collate import Encoded, PromptPass, RowsOnRead, encode_prompts, encode_responses


def sampler_reads(*, group_by_length: bool, packing: bool) -> str | None:
    """Why the ``hf`` trainer's sampler reads every row's length, or None
    when it only draws indices (random order, weighted sampling)."""
    if packing:
        return "packing plans its rows from every example's length"
    if group_by_length:
        return "group_by_length reads every example's length"
    return None


def read_all_reason(opts, *, needed: int, available: int) -> str | None:
    """Why every kept row must be tokenised before training although the
    sampler reads none of them, or None when only the rows the first
    ``max_steps`` steps draw need be (``needed`` of ``available``)."""
    if int(opts.max_steps) <= 0:
        return "no max_steps: every epoch reads every row"
    if int(opts.dataloader_num_workers) > 0:
        return "dataloader workers would tokenise in other processes"
    if needed >= available:
        return f"max_steps reads {needed} rows, the set has {available}"
    return None


class TrainRows(RowsOnRead):
    """The kept examples (``PromptPass.kept``) as rows ``0..n-1``: a row is
    tokenised when first read (:meth:`many` takes a whole micro-batch in one
    tokeniser call) or all at once (:meth:`tokenize_all`)."""

    def __init__(self, tokenizer, examples: Sequence[Any], prompts: PromptPass, weights: Sequence[float]):
        self.tokenizer = tokenizer
        self.examples = examples
        self.prompts = prompts
        self.weights = [float(w) for w in weights]  # one per kept row
        self._rows: list[Encoded | None] = [None] * len(prompts.kept)
        self._tokenized = 0
        self.read_all_reason: str | None = None  # why every row was tokenised up front, if it was
        self.tokenizer_calls = 0  # response passes (each: one render, one tokeniser call a chunk)

    @classmethod
    def of(cls, tokenizer, examples: Sequence[Any], max_length: int) -> "TrainRows":
        prompts = encode_prompts(tokenizer, examples, max_length)
        weights = [float(getattr(examples[i], "weight", 1.0)) for i in prompts.kept]
        return cls(tokenizer, examples, prompts, weights)

    @property
    def dropped(self) -> list[int]:
        return self.prompts.dropped

    @property
    def tokenized(self) -> int:
        """Rows whose responses were tokenised so far."""
        return self._tokenized

    @property
    def truncated(self) -> int:
        """Truncated rows among those tokenised."""
        return sum(1 for r in self._rows if r is not None and r.truncated)

    def set_weights(self, weights: Sequence[float]) -> None:
        """The weight each row carries into the loss (rows read before included)."""
        self.weights = [float(w) for w in weights]
        for j, row in enumerate(self._rows):
            if row is not None:
                row.weight = self.weights[j]

    def tokenize_all(self) -> "TrainRows":
        """Every row tokenised now; what only tokenising more would read (the
        rendered prompts, the examples) is let go."""
        self.many(range(len(self)))
        self.prompts.release()
        self.examples = ()
        return self

    def many(self, rows: Sequence[int] | range) -> list[Encoded]:
        missing = sorted({j for j in rows if self._rows[j] is None})
        if missing:
            kept = self.prompts.kept
            encoded = encode_responses(self.tokenizer, self.examples, self.prompts, [kept[j] for j in missing],
                                       [self.weights[j] for j in missing])
            self.tokenizer_calls += 1
            for j, row in zip(missing, encoded):
                self._rows[j] = row
            self._tokenized += len(missing)
        return [self._rows[j] for j in rows]

    def __len__(self) -> int:
        return len(self.prompts.kept)

    def __getitem__(self, j: int) -> Encoded:
        if not 0 <= j < len(self):
            raise IndexError(j)
        return self.many([j])[0]

    def __iter__(self) -> Iterator[Encoded]:
        return iter(self.many(range(len(self))))
