"""Batches of similar length for the encoder models.

An encoder pads each batch to its longest text, so texts in their given
order pad to the longest of every random batch. Sorting the texts by length
first makes each batch's texts alike, which cuts the padded tokens the model
computes; the results go back in the given order. Character length is the
proxy for token length (no tokenizing twice); ties keep their order.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, longest first (stable)."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def by_length(run: Callable[[list[str]], Sequence[T]], texts: Sequence[str]) -> list[T]:
    """``run(texts)`` computed on the texts sorted by length, returned in the given order."""
    order = length_order(texts)
    done = run([texts[i] for i in order])
    out: list[T] = [None] * len(texts)  # type: ignore[list-item]
    for k, i in enumerate(order):
        out[i] = done[k]
    return out
