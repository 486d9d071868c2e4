"""The LSH band index of the ``minhash`` de-dup: which pool texts share at
least one band (``rows`` consecutive MinHash values) with a query.

It finds the same candidates as datasketch's ``MinHashLSH`` with the same
bands and rows: two texts are candidates when some band's values are equal.
datasketch keeps a Python set per distinct band value (and the band values
once more per key): about 11 KB per text at 51 bands, 1.25 GB for the 112K
texts of the 52K rehearsal's third round. Here each (band, value) is one
64-bit number in a sorted numpy array beside its text's index: 12 bytes per
band, 0.6 KB per text, and bulk additions are vectorised.

The 64-bit number mixes the band's number and its values (equal values give
equal numbers, so no candidate is lost); two different bands share one with
a chance of about ``n / 2**64``, and such an extra candidate is then checked
like any other (exact ROUGE-L, or the MinHash Jaccard estimate), so the
filter's answers are datasketch's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# Texts added one at a time wait in a dict until this many, then join the arrays.
_PENDING_LIMIT = 4096


_CONSTANTS: tuple = ()


def _constants() -> tuple:
    global _CONSTANTS
    if not _CONSTANTS:
        import numpy as np

        _CONSTANTS = tuple(np.uint64(c) for c in (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31,
                                                  0x9E3779B97F4A7C15))
    return _CONSTANTS


def _mix(x: "np.ndarray") -> "np.ndarray":
    """splitmix64's finaliser, element-wise on uint64 (wrapping), in place."""
    s30, m1, s27, m2, s31, _ = _constants()
    x ^= x >> s30
    x *= m1
    x ^= x >> s27
    x *= m2
    x ^= x >> s31
    return x


class BandIndex:
    """Pool texts by their MinHash bands; ``query`` gives the indices of the
    texts that share a band with a MinHash."""

    def __init__(self, bands: int, rows: int):
        import numpy as np

        self.bands, self.rows = int(bands), int(rows)
        with np.errstate(over="ignore"):
            self._salts = np.arange(1, self.bands + 1, dtype=np.uint64) * _constants()[5]  # the band's number
        self._values = np.zeros(0, dtype=np.uint64)  # sorted band numbers
        self._owners = np.zeros(0, dtype=np.int32)  # the text index of each
        self._pending: dict[int, list[int]] = {}
        self._pending_texts = 0

    def __len__(self) -> int:
        return (len(self._values) // self.bands if self.bands else 0) + self._pending_texts

    def band_numbers(self, hashvalues: "np.ndarray") -> "np.ndarray":
        """(n, bands) uint64: one number per band of each MinHash row of
        ``hashvalues`` (n, num_perm)."""
        import numpy as np

        hv = np.ascontiguousarray(np.atleast_2d(hashvalues)[:, : self.bands * self.rows], dtype=np.uint64)
        per_band = hv.reshape(len(hv), self.bands, self.rows)
        acc = np.empty(per_band.shape[:2], dtype=np.uint64)
        acc[:] = self._salts
        for k in range(self.rows):
            acc ^= per_band[:, :, k]
            _mix(acc)
        return acc

    def add_many(self, owners: Sequence[int], hashvalues: "np.ndarray") -> None:
        """Add texts ``owners[i]`` with MinHash values ``hashvalues[i]`` (vectorised)."""
        import numpy as np

        if not len(owners):
            return
        self._flush()
        numbers = self.band_numbers(hashvalues).ravel()
        who = np.repeat(np.asarray(owners, dtype=np.int32), self.bands)
        self._merge(numbers, who)

    def add(self, owner: int, numbers: "np.ndarray") -> None:
        """Add one text by its :meth:`band_numbers` row. It waits in a dict
        (seen by :meth:`query`) until :meth:`settle` merges the waiting texts."""
        for number in numbers.tolist():
            self._pending.setdefault(number, []).append(owner)
        self._pending_texts += 1

    def settle(self) -> None:
        """Merge the texts :meth:`add` left waiting once there are
        :data:`_PENDING_LIMIT` of them (call it between batches of queries)."""
        if self._pending_texts >= _PENDING_LIMIT:
            self._flush()

    def stored_candidates(self, numbers: "np.ndarray") -> list[set[int]]:
        """For each row of :meth:`band_numbers`, the texts in the sorted
        arrays that share a band with it (one vectorised search for all rows;
        the texts waiting from :meth:`add` are not included)."""
        import numpy as np

        out: list[set[int]] = [set() for _ in range(len(numbers))]
        if not len(self._values) or not len(numbers):
            return out
        left = np.searchsorted(self._values, numbers, side="left")
        right = np.searchsorted(self._values, numbers, side="right")
        lengths = right - left
        rows = np.flatnonzero(lengths.any(axis=1))
        for row in rows.tolist():
            hit = lengths[row] > 0
            lo, n = left[row][hit], lengths[row][hit]
            # every position in [lo, lo + n) of each band that hit, in one array
            starts = np.repeat(lo - np.concatenate(([0], np.cumsum(n)[:-1])), n)
            out[row] = set(np.unique(self._owners[starts + np.arange(n.sum())]).tolist())
        return out

    def waiting_candidates(self, numbers: "np.ndarray") -> set[int]:
        """The texts waiting from :meth:`add` that share a band with one :meth:`band_numbers` row."""
        found: set[int] = set()
        if self._pending:
            for number in numbers.tolist():
                owners = self._pending.get(number)
                if owners:
                    found.update(owners)
        return found

    def query(self, hashvalues: "np.ndarray") -> set[int]:
        """Indices of the texts that share at least one band with ``hashvalues``."""
        numbers = self.band_numbers(hashvalues)
        return self.stored_candidates(numbers)[0] | self.waiting_candidates(numbers[0])

    def _flush(self) -> None:
        import numpy as np

        if not self._pending:
            return
        numbers = np.fromiter((n for n, owners in self._pending.items() for _ in owners), dtype=np.uint64)
        who = np.fromiter((o for owners in self._pending.values() for o in owners), dtype=np.int32)
        self._pending, self._pending_texts = {}, 0
        self._merge(numbers, who)

    def _merge(self, numbers: "np.ndarray", who: "np.ndarray") -> None:
        """Insert (number, owner) pairs into the sorted arrays: O(old + new)."""
        import numpy as np

        order = np.argsort(numbers, kind="stable")
        numbers, who = numbers[order], who[order]
        at = np.searchsorted(self._values, numbers, side="right")
        self._values = np.insert(self._values, at, numbers)
        self._owners = np.insert(self._owners, at, who)
