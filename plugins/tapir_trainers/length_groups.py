"""Length grouping for small training sets.

transformers' ``group_by_length`` sorts examples by length within
"mega-batches" of ``min(50, n / (4 x batch))`` batches, so a set of fewer than
eight batches is sorted one batch at a time: its batches are as mixed in
length as random ones (the demo's 32 rows: 21% of the positions trained were
padding). :class:`LengthGroupedEpochSampler` sorts ``group_batches`` batches
at a time instead (the ``length_group_batches`` option): less padding, so
fewer positions computed for the same real tokens, at the price of batches
whose make-up varies less from epoch to epoch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from .weighting import epoch_generator


class LengthGroupedEpochSampler:
    """A random permutation of the examples, cut into groups of
    ``group_batches`` batches, each group sorted by length, longest first;
    the group holding the longest example comes first (an out-of-memory
    error shows at the first step). Deterministic for ``(seed, epoch)``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int, seed: int = 0):
        self.lengths = [int(n) for n in lengths]
        self.group_size = max(1, int(batch_size)) * max(1, int(group_batches))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def order(self) -> list[int]:
        import torch

        generator = epoch_generator(self.seed, self.epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator).tolist()
        groups = [sorted(shuffled[i: i + self.group_size], key=lambda k: self.lengths[k], reverse=True)
                  for i in range(0, len(shuffled), self.group_size)]
        if groups:
            longest = max(range(len(groups)), key=lambda g: self.lengths[groups[g][0]])
            groups[0], groups[longest] = groups[longest], groups[0]
        return [k for group in groups for k in group]
