"""Near-duplicate filtering of instructions that scales to the paper's sizes.

:class:`NearDuplicateFilter` keeps a pool of accepted texts and rejects a new
text that is too similar to any of them (or to an earlier text of the same
batch). Methods:

``minhash`` (default)
    MinHash LSH over the set of a text's words: candidates are the pool texts
    whose word Jaccard similarity is likely at or above ``j = t / (2 - t)``,
    the Jaccard similarity that goes with a ROUGE-L F1 of ``t`` (for two
    texts of distinct words that differ by substitutions it is exact; for any
    pair, ROUGE-L F1 >= t implies a multiset Jaccard >= j). Signatures
    (``num_perm`` universal hash functions) and band keys are computed with
    numpy for a whole batch at once, and the bands are plain dicts: the
    per-key cost of datasketch's MinHashLSH (about 120 us an insert and 100 us
    a query, measured) put 59K candidates against a 70K pool near a minute,
    this takes well under half of that (benchmarks/bench_dedup.py). The
    bands and rows come from :func:`lsh_params`.
    With ``verify=True`` (the default) each candidate is then checked with the
    exact ROUGE-L F1, so the filter never rejects a text whose ROUGE-L is
    below ``t`` (precision 1 against exact ROUGE-L) and misses only the
    duplicates LSH did not propose. With ``verify=False`` a candidate is a
    duplicate when its MinHash Jaccard estimate is >= ``j``.
``rouge``
    Exact ROUGE-L F1 >= ``t`` against every pool text. Exact, yet not a scan
    of the pool: a prefix-filter index (from set-similarity joins) proposes
    only the pool texts that can reach ``t`` (ROUGE-L F1 >= t needs at least
    ``t * m / (2 - t)`` shared words), and a bit-parallel LCS scores those.
``embedding``
    Cosine similarity >= ``t`` of ``embed(texts)`` vectors (numpy); ``embed``
    is given by the caller (e.g. ``tapir_hf.encoder.embed``), so this module
    imports no model library.
``none``
    Accepts everything.

For every method but ``none``, a text equal to an accepted one (after case
and whitespace folding) is a duplicate.

Tokens are runs of Unicode letters and digits, lower-cased: on ASCII text the
same tokens as rouge-score's default tokenizer without stemming (the
similarity the pipeline used before), so :func:`rouge_l` equals
``rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure``
there (tests/test_dedup.py checks it); non-ASCII words count as words instead
of being dropped.

numpy is imported inside the methods that need it (none for ``rouge`` and ``none``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from tapir.errors import TapirError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

METHODS = ("minhash", "rouge", "embedding", "none")
DEFAULT_METHOD = "minhash"

_PRIME = 4294967311  # the smallest prime above 2**32: a * h + b < 2**63 for a, b < 2**31, h < 2**32
_CHUNK = 4096  # texts signed at once
_TOKEN = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences
    (bit-parallel, Hyyrö 2004: one big-integer step per token of ``b``)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    return _lcs_with_masks(_masks(a), len(a), b)


def _masks(a: Sequence[str]) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def _lcs_with_masks(masks: dict[str, int], m: int, b: Iterable[str]) -> int:
    full = (1 << m) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - bin(v).count("1")


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token sequences: 2 * LCS / (len(a) + len(b))."""
    if not a or not b:
        return 0.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))


def rouge_l_text(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts (tokenized with :func:`tokenize`)."""
    return rouge_l(tokenize(a), tokenize(b))


def jaccard_for_rouge(threshold: float) -> float:
    """The word Jaccard similarity that goes with a ROUGE-L F1 of ``threshold``."""
    return threshold / (2.0 - threshold)


@functools.lru_cache(maxsize=32)
def lsh_params(jaccard: float, num_perm: int, weights: tuple[float, float] = (0.1, 0.9)) -> tuple[int, int]:
    """LSH bands and rows per band (bands * rows <= num_perm) minimising the
    weighted area of false positives below ``jaccard`` and false negatives
    above it, for P(candidate | s) = 1 - (1 - s**rows)**bands. The weights
    favour recall: a missed duplicate stays in the data, a false candidate
    costs one exact check."""
    best, best_cost = (1, 1), float("inf")
    grid = 400
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            fp = fn = 0.0
            for k in range(grid):
                s = (k + 0.5) / grid
                p = 1.0 - (1.0 - s**rows) ** bands
                if s < jaccard:
                    fp += p / grid
                else:
                    fn += (1.0 - p) / grid
            cost = weights[0] * fp + weights[1] * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


class NearDuplicateFilter:
    """Accepts texts that are not near-duplicates of the pool, adding each
    accepted text to the pool.

    ``threshold``: ROUGE-L F1 for ``minhash`` and ``rouge`` (a text at or
    above it is a duplicate), cosine similarity for ``embedding``.
    ``num_perm`` (MinHash permutations) and ``verify`` apply to ``minhash``;
    ``seed`` fixes its hash functions. ``stats`` counts accepted and rejected
    texts and, for ``minhash``/``rouge``, the candidate pairs scored.
    """

    def __init__(
        self,
        method: str,
        threshold: float,
        pool: Sequence[str] = (),
        embed: Callable[[list[str]], "np.ndarray"] | None = None,
        *,
        num_perm: int = 256,
        verify: bool = True,
        seed: int = 1,
    ):
        if method not in METHODS:
            raise TapirError(f"de-dup method must be one of {', '.join(METHODS)}, not {method!r}")
        if not 0.0 < threshold <= 1.0:
            raise TapirError(f"de-dup threshold must be in (0, 1], got {threshold}")
        if method == "embedding" and embed is None:
            raise TapirError("de-dup method 'embedding' needs an embed(texts) function")
        self.method = method
        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.verify = bool(verify)
        self.seed = int(seed)
        self.stats = {"accepted": 0, "rejected": 0, "exact": 0, "candidates": 0}
        self._embed = embed
        self._seen: set[str] = set()
        self._tokens: list[list[str]] = []
        self._size = 0
        if method == "minhash":
            self._init_minhash()
        elif method == "rouge":
            self._init_rouge(pool)
        elif method == "embedding":
            self._vectors = None
            self._n_vectors = 0
        if pool:
            self._add_pool(list(pool))

    def __len__(self) -> int:
        """How many texts the pool holds (the initial pool and every accepted text)."""
        return self._size

    # -- public API ------------------------------------------------------------

    def accept(self, text: str) -> bool:
        """True (and ``text`` joins the pool) unless it is a near-duplicate."""
        return self.accept_many([text])[0]

    def accept_many(self, texts: Sequence[str]) -> list[bool]:
        """:meth:`accept` for each text in order: a text is also checked
        against the texts accepted before it in the same batch."""
        out = self._run(list(texts), add=True)
        kept = sum(out)
        self.stats["accepted"] += kept
        self.stats["rejected"] += len(out) - kept
        return out

    def duplicates(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text is a near-duplicate of the pool as it is; the
        pool is not changed and the texts are not compared with each other."""
        return [not ok for ok in self._run(list(texts), add=False)]

    def _run(self, texts: list[str], add: bool) -> list[bool]:
        if self.method == "none":
            if add:
                self._size += len(texts)
            return [True] * len(texts)
        if self.method == "embedding":
            return self._accept_embedding(texts, add)
        if self.method == "minhash":
            return self._accept_minhash(texts, add)
        return self._accept_rouge(texts, add)

    # -- shared ----------------------------------------------------------------

    def _exact_duplicate(self, text: str) -> bool:
        key = _normal(text)
        if key in self._seen:
            self.stats["exact"] += 1
            return True
        return False

    def _add_pool(self, pool: list[str]) -> None:
        if self.method == "none":
            self._size += len(pool)
        elif self.method == "embedding":
            self._seen.update(_normal(t) for t in pool)
            self._append_vectors(self._embed_normalised(pool))
            self._size += len(pool)
        elif self.method == "minhash":
            self._seen.update(_normal(t) for t in pool)
            self._add_minhash_pool(pool)
        else:
            self._seen.update(_normal(t) for t in pool)
            for t in pool:
                self._index(tokenize(t))

    # -- minhash ---------------------------------------------------------------

    def _init_minhash(self) -> None:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - depends on the install
            raise TapirError("de-dup method 'minhash' needs numpy (pip install 'tapir-distill[local]'), "
                             "or use method=rouge") from None

        self._jaccard = jaccard_for_rouge(self.threshold)
        self.bands, self.rows = lsh_params(self._jaccard, self.num_perm)
        rng = np.random.RandomState(self.seed)
        self._a = rng.randint(1, 1 << 31, size=self.num_perm).astype(np.uint64)
        self._b = rng.randint(0, 1 << 31, size=self.num_perm).astype(np.uint64)
        # Odd 64-bit multipliers that fold a band's r values into one key.
        self._fold = (rng.randint(0, 1 << 62, size=self.rows).astype(np.uint64) << np.uint64(1)) | np.uint64(1)
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._word_hash: dict[str, int] = {}
        self._signatures = None  # (n, num_perm) uint32, kept only when verify=False
        self._n_signatures = 0

    def _hash_words(self, tokens: list[list[str]]):
        """The distinct words of each token list as 32-bit hashes (blake2b,
        stable across processes), flattened, and each list's count."""
        import numpy as np

        cache = self._word_hash
        flat: list[int] = []
        lengths: list[int] = []
        for toks in tokens:
            distinct = set(toks)
            for w in distinct:
                h = cache.get(w)
                if h is None:
                    h = cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=4).digest(), "little")
                flat.append(h)
            lengths.append(len(distinct))
        return np.asarray(flat, dtype=np.uint64), np.asarray(lengths, dtype=np.int64)

    def _minhashes(self, tokens: list[list[str]]):
        """MinHash signatures (rows: token lists, all non-empty) with numpy:
        ``num_perm`` universal hash functions ``(a * h + b) mod p`` of each
        distinct word's hash, minimum per function; and the LSH band keys."""
        import numpy as np

        values, lengths = self._hash_words(tokens)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        sigs = np.empty((len(tokens), self.num_perm), dtype=np.uint64)
        per_block = max(1, (1 << 22) // self.num_perm)  # about 4M cells (32 MB) per block
        t = 0
        while t < len(tokens):
            u = max(t + 1, int(np.searchsorted(ends, starts[t] + per_block, side="right")))
            u = min(u, len(tokens))
            lo, hi = int(starts[t]), int(ends[u - 1])
            block = (values[lo:hi, None] * self._a[None, :] + self._b[None, :]) % np.uint64(_PRIME)
            sigs[t:u] = np.minimum.reduceat(block, starts[t:u] - lo, axis=0)
            t = u
        used = sigs[:, : self.bands * self.rows].reshape(len(tokens), self.bands, self.rows)
        keys = (used * self._fold[None, None, :]).sum(axis=2, dtype=np.uint64)  # wraps mod 2**64
        return sigs, keys

    def _keep_signature(self, sig) -> None:
        import numpy as np

        if self._signatures is None:
            self._signatures = np.empty((1024, self.num_perm), dtype=np.uint32)
        if self._n_signatures == len(self._signatures):
            grown = np.empty((2 * len(self._signatures), self.num_perm), dtype=np.uint32)
            grown[: self._n_signatures] = self._signatures
            self._signatures = grown
        self._signatures[self._n_signatures] = sig.astype(np.uint32)  # low 32 bits
        self._n_signatures += 1

    def _remember(self, tokens: list[str], band_keys: list[int] | None, sig=None) -> None:
        key = self._size
        self._tokens.append(tokens)
        self._size += 1
        if not self.verify:
            import numpy as np

            self._keep_signature(sig if sig is not None else np.zeros(self.num_perm, dtype=np.uint64))
        if band_keys is not None:
            for table, k in zip(self._tables, band_keys):
                bucket = table.get(k)
                if bucket is None:
                    table[k] = [key]
                else:
                    bucket.append(key)

    def _signed(self, tokens: list[list[str]]):
        """Signatures and band keys (as Python ints) for the non-empty lists."""
        todo = [i for i, toks in enumerate(tokens) if toks]
        sigs, keys = self._minhashes([tokens[i] for i in todo]) if todo else (None, None)
        band_keys: list = [None] * len(tokens)
        signatures: list = [None] * len(tokens)
        if todo:
            for j, (i, row) in enumerate(zip(todo, keys.tolist())):
                band_keys[i] = row
                signatures[i] = sigs[j]
        return band_keys, signatures

    def _add_minhash_pool(self, pool: list[str]) -> None:
        for start in range(0, len(pool), _CHUNK):
            tokens = [tokenize(t) for t in pool[start : start + _CHUNK]]
            band_keys, signatures = self._signed(tokens)
            for toks, keys, sig in zip(tokens, band_keys, signatures):
                self._remember(toks, keys, sig)

    def _accept_minhash(self, texts: list[str], add: bool) -> list[bool]:
        out: list[bool] = []
        for start in range(0, len(texts), _CHUNK):  # bounded memory: signatures per chunk
            out += self._accept_minhash_chunk(texts[start : start + _CHUNK], add)
        return out

    def _accept_minhash_chunk(self, texts: list[str], add: bool) -> list[bool]:
        import numpy as np

        tokens = [tokenize(t) for t in texts]
        band_keys, signatures = self._signed(tokens)
        out = []
        for text, toks, keys, sig in zip(texts, tokens, band_keys, signatures):
            duplicate = self._exact_duplicate(text)
            if not duplicate and keys is not None:
                found: set[int] = set()
                for table, k in zip(self._tables, keys):
                    bucket = table.get(k)
                    if bucket:
                        found.update(bucket)
                if found and self.verify:
                    masks = _masks(toks)
                    for key in found:
                        self.stats["candidates"] += 1
                        if self._rouge_at_least(toks, masks, self._tokens[key]):
                            duplicate = True
                            break
                elif found:
                    low = sig.astype(np.uint32)
                    rows = self._signatures[np.fromiter(found, dtype=np.int64, count=len(found))]
                    self.stats["candidates"] += len(found)
                    duplicate = bool(((rows == low[None, :]).mean(axis=1) >= self._jaccard).any())
            if not duplicate and add:
                self._seen.add(_normal(text))
                self._remember(toks, keys, sig)
            out.append(not duplicate)
        return out

    def _rouge_at_least(self, toks: list[str], masks: dict[str, int], other: list[str]) -> bool:
        m, n = len(toks), len(other)
        if not m or not n or 2.0 * min(m, n) / (m + n) < self.threshold:
            return False
        return 2.0 * _lcs_with_masks(masks, m, other) / (m + n) >= self.threshold

    # -- exact ROUGE-L with a prefix-filter index ------------------------------

    def _init_rouge(self, pool: Sequence[str]) -> None:
        # A fixed global order of words, rarest first (by their count in the
        # initial pool; unseen words count 0). Any fixed order keeps the
        # filter exact; rare-first keeps the posting lists short.
        counts: dict[str, int] = {}
        for text in pool:
            for tok in tokenize(text):
                counts[tok] = counts.get(tok, 0) + 1
        self._counts = counts
        self._postings: dict[tuple[str, int], list[int]] = {}
        self._lengths: list[int] = []

    def _elements(self, tokens: list[str]) -> list[tuple[str, int]]:
        """The multiset of words as (word, occurrence) pairs, in the global order."""
        seen: dict[str, int] = {}
        elems = []
        for tok in tokens:
            k = seen.get(tok, 0)
            seen[tok] = k + 1
            elems.append((tok, k))
        counts = self._counts
        elems.sort(key=lambda e: (counts.get(e[0], 0), e[0], e[1]))
        return elems

    def _min_overlap(self, m: int) -> int:
        """ROUGE-L F1 >= t with a text of m words needs an LCS, hence a word
        overlap, of at least t * m / (2 - t)."""
        t = self.threshold
        return max(1, math.ceil(t * m / (2.0 - t) - 1e-9))

    def _index(self, tokens: list[str]) -> None:
        key = self._size
        self._tokens.append(tokens)
        self._lengths.append(len(tokens))
        self._size += 1
        if not tokens:
            return
        elems = self._elements(tokens)
        for elem in elems[: len(elems) - self._min_overlap(len(elems)) + 1]:
            self._postings.setdefault(elem, []).append(key)

    def _accept_rouge(self, texts: list[str], add: bool) -> list[bool]:
        out = []
        t = self.threshold
        for text in texts:
            toks = tokenize(text)
            duplicate = self._exact_duplicate(text)
            if not duplicate and toks:
                m = len(toks)
                elems = self._elements(toks)
                masks = _masks(toks)
                checked: set[int] = set()
                for elem in elems[: m - self._min_overlap(m) + 1]:
                    for key in self._postings.get(elem, ()):
                        if key in checked:
                            continue
                        checked.add(key)
                        n = self._lengths[key]
                        if 2.0 * min(m, n) / (m + n) < t:
                            continue
                        self.stats["candidates"] += 1
                        if 2.0 * _lcs_with_masks(masks, m, self._tokens[key]) / (m + n) >= t:
                            duplicate = True
                            break
                    if duplicate:
                        break
            if not duplicate and add:
                self._seen.add(_normal(text))
                self._index(toks)
            out.append(not duplicate)
        return out

    # -- embeddings ------------------------------------------------------------

    def _embed_normalised(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype="float32")
        vectors = np.asarray(self._embed(list(texts)), dtype="float32")
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise TapirError(f"embed() returned shape {vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _append_vectors(self, vectors) -> None:
        import numpy as np

        if not len(vectors):
            return
        if self._vectors is None:
            self._vectors = np.empty((max(1024, 2 * len(vectors)), vectors.shape[1]), dtype="float32")
        need = self._n_vectors + len(vectors)
        if need > len(self._vectors):
            grown = np.empty((max(need, 2 * len(self._vectors)), self._vectors.shape[1]), dtype="float32")
            grown[: self._n_vectors] = self._vectors[: self._n_vectors]
            self._vectors = grown
        self._vectors[self._n_vectors : need] = vectors
        self._n_vectors = need

    def _accept_embedding(self, texts: list[str], add: bool, chunk: int = 1024) -> list[bool]:
        import numpy as np

        out: list[bool] = []
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            vectors = self._embed_normalised(part)
            # Best similarity to the pool as it was before this chunk.
            if self._n_vectors:
                best = (vectors @ self._vectors[: self._n_vectors].T).max(axis=1)
            else:
                best = np.full(len(part), -1.0, dtype="float32")
            within = vectors @ vectors.T if add else None
            kept: list[int] = []
            for i, text in enumerate(part):
                duplicate = self._exact_duplicate(text) or bool(best[i] >= self.threshold)
                if not duplicate and kept and add:
                    duplicate = bool(within[i, kept].max() >= self.threshold)
                if not duplicate and add:
                    kept.append(i)
                    self._seen.add(_normal(text))
                out.append(not duplicate)
            if add:
                self._append_vectors(vectors[kept])
                self._size += len(kept)
        return out


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "NearDuplicateFilter",
    "jaccard_for_rouge",
    "lcs_length",
    "rouge_l",
    "rouge_l_text",
    "tokenize",
]
