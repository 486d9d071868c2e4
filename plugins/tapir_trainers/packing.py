"""Packing: which examples share a micro-batch, so that packed rows come out full.

Packing one micro-batch at a time leaves rows unevenly filled when a
micro-batch holds few examples. :class:`PackedBatchSampler` packs the whole
optimizer step instead: it takes the ``batch_size`` examples of one step (in
the order the base sampler draws them), packs them into rows of at most
``capacity`` tokens balanced by length, and hands the rows out as exactly
``gradient_accumulation x world_size`` micro-batches. Every optimizer step
still sees the same examples as without packing; only their grouping into
micro-batches changes. :class:`~tapir_trainers.collate.PackCollator` then
lays each micro-batch out as rows with restarting ``position_ids``.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from .collate import pack_rows
from .weighting import epoch_generator



class EpochPermutationSampler:
    """A random permutation of ``range(n)``, deterministic for ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int = 0):
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        import torch

        generator = epoch_generator(self.seed, self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class PackedBatchSampler:
    """Yields micro-batches (lists of dataset indices) for packed training.

    ``sampler`` gives the example order (a permutation, or weighted draws);
    each run of ``group_size`` of them is one optimizer step (all ranks), cut
    into ``n_micro`` micro-batches of balanced, well-filled rows.
    """

    batch_size = None  # variable-size batches (accelerate shards them as whole batches)
    drop_last = False

    def __init__(self, sampler, lengths: Sequence[int], group_size: int, n_micro: int, capacity: int):
        self.sampler = sampler
        self.lengths = list(lengths)
        self.group_size = max(1, int(group_size))
        self.n_micro = max(1, int(n_micro))
        self.capacity = int(capacity)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        full, rest = divmod(n, self.group_size)
        return full * self.n_micro + (min(self.n_micro, rest) if rest else 0)

    def split(self, group: Sequence[int]) -> list[list[int]]:
        """The micro-batches of one optimizer step's examples."""
        lengths = [self.lengths[i] for i in group]
        capacity = max(self.capacity, max(lengths))
        rows_needed = math.ceil(sum(lengths) / capacity)
        per_micro = max(1, math.ceil(rows_needed / self.n_micro))
        rows = pack_rows(lengths, capacity, min(len(group), per_micro * self.n_micro))
        n_out = min(self.n_micro, len(rows))
        # Rows of similar length share a micro-batch (each is padded to its longest row).
        rows.sort(key=lambda row: -sum(lengths[i] for i in row))
        bounds = [round(k * len(rows) / n_out) for k in range(n_out + 1)]
        return [[group[i] for row in rows[a:b] for i in row] for a, b in zip(bounds, bounds[1:])]

    def __iter__(self) -> Iterator[list[int]]:
        group: list[int] = []
        for index in self.sampler:
            group.append(int(index))
            if len(group) == self.group_size:
                yield from self.split(group)
                group = []
        if group:
            yield from self.split(group)


__all__ = ["EpochPermutationSampler", "PackedBatchSampler"]
