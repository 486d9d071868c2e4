"""Per-sample weights: validation, optional normalisation, and a weighted sampler.

Two ways a sample's weight reaches training (``weighting`` option):

``"loss"``
    every token loss of the sample is multiplied by its weight, exactly as
    given (Eq. 4's alpha_r and 1 - alpha_r); only with ``normalize_weights``
    are the weights first rescaled to mean 1 over the training set.
``"sampling"``
    each epoch draws ``n`` samples with replacement, with probability
    proportional to the weight; every drawn sample has loss weight 1.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from tapir.errors import TapirError

WEIGHTINGS = ("loss", "sampling")


def validate_weights(weights: Sequence[float]) -> list[float]:
    """The weights as floats. Raises on negative, NaN or all-zero weights."""
    values = [float(w) for w in weights]
    for i, w in enumerate(values):
        if not math.isfinite(w) or w < 0:
            raise TapirError(
                f"training example {i} has weight {w!r}; weights must be finite and >= 0 "
                f"(fix the weights the pipeline assigns, e.g. alpha per round)"
            )
    total = sum(values)
    if total <= 0:
        raise TapirError("every training example has weight 0: nothing to learn from (check the round's alpha)")
    return values


def normalise_weights(weights: Sequence[float]) -> list[float]:
    """Weights scaled so that their mean is 1 (the ``normalize_weights`` option)."""
    values = validate_weights(weights)
    mean = sum(values) / len(values)
    return [w / mean for w in values]


def epoch_generator(seed: int, epoch: int):
    """The torch generator of ``(seed, epoch)``: the trainers' samplers draw
    from it, so every rank and a resumed run draw the same order."""
    import torch

    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class WeightedEpochSampler:
    """Draws ``num_samples`` indices with replacement, with probability ∝ weight.

    Deterministic for a given ``(seed, epoch)``: every rank of a distributed
    run draws the same sequence (accelerate then hands each rank its share of
    the batches), and a resumed run draws what the interrupted one drew.
    ``set_epoch`` is called by the Trainer at the start of each epoch.
    """

    def __init__(self, weights: Sequence[float], num_samples: int | None = None, seed: int = 0):
        self.weights = [float(w) for w in weights]
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        import torch

        generator = epoch_generator(self.seed, self.epoch)
        weights = torch.tensor(self.weights, dtype=torch.double)
        drawn = torch.multinomial(weights, self.num_samples, replacement=True, generator=generator)
        return iter(drawn.tolist())
