"""Near-duplicate filtering of instructions that scales to the paper's sizes.

:class:`NearDuplicateFilter` keeps a pool of accepted texts and rejects a new
text that is too similar to any of them (or to an earlier text of the same
batch). Methods:

``minhash`` (default)
    MinHash LSH over the set of a text's words, with datasketch: candidates
    are the pool texts whose word Jaccard similarity is likely at or above
    ``j = t / (2 - t)``, the Jaccard similarity that goes with a ROUGE-L F1
    of ``t`` (for two texts of distinct words that differ by substitutions it
    is exact; for any pair, ROUGE-L F1 >= t implies a multiset Jaccard >= j).
    Signatures are ``datasketch.MinHash.generator`` (``num_perm``
    permutations, ``seed``; words hashed with datasketch's SHA-1 hash, cached
    per word); the bands and rows are those datasketch's ``MinHashLSH``
    chooses for threshold ``j`` with false-positive/negative weights
    (0.1, 0.9) (51 bands of 5 rows at t = 0.7, 256 permutations), and the
    band index is :class:`tapir.dedup_bands.BandIndex`: the same candidates
    as ``MinHashLSH`` (texts sharing a band), in sorted numpy arrays (0.6 KB
    per text instead of about 11 KB).
    With ``verify=True`` (the default) each candidate is then checked with the
    exact ROUGE-L F1, so the filter never rejects a text whose ROUGE-L is
    below ``t`` (precision 1 against exact ROUGE-L) and misses only the
    duplicates LSH did not propose. With ``verify=False`` a candidate is a
    duplicate when its MinHash Jaccard estimate (``MinHash.jaccard`` against
    the pool text's ``LeanMinHash``) is >= ``j``.
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

Across rounds the pool only grows (the instructions, then every round's
accepted ones), so :func:`pool_filter` keeps the last filter built for the
same settings and, when every text it holds is still in the new pool, adds
only the pool's new texts instead of hashing the whole pool again. Every
method's verdicts depend only on the set of pool texts, not on the order they
came in, so a kept filter gives the same verdicts as a new one.

Tokens are runs of Unicode letters and digits, lower-cased: on ASCII text the
same tokens as rouge-score's default tokenizer without stemming (the
similarity the pipeline used before), so :func:`rouge_l` equals
``rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure``
there (tests/test_dedup.py checks it); non-ASCII words count as words instead
of being dropped.

datasketch and numpy are imported inside the methods that need them (none for ``rouge`` and ``none``).
"""

from __future__ import annotations

import functools
import math
import re
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from tapir.errors import TapirError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

METHODS = ("minhash", "rouge", "embedding", "none")
DEFAULT_METHOD = "minhash"

LSH_WEIGHTS = (0.1, 0.9)  # datasketch MinHashLSH's (false positive, false negative) weights
_QUERY_CHUNK = 1024  # minhash: texts whose band index searches are done together
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


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
    """A word's 32-bit hash for MinHash (datasketch's SHA-1 hash, stable
    across processes), cached: a word recurs in many texts."""
    from datasketch.hashfunc import sha1_hash32

    return sha1_hash32(word.encode("utf-8"))


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


class NearDuplicateFilter:
    """Accepts texts that are not near-duplicates of the pool, adding each
    accepted text to the pool.

    ``threshold``: ROUGE-L F1 for ``minhash`` and ``rouge`` (a text at or
    above it is a duplicate), cosine similarity for ``embedding``.
    ``num_perm`` (MinHash permutations) and ``verify`` apply to ``minhash``;
    ``seed`` fixes its hash functions. ``stats`` counts accepted and rejected
    texts (``exact``: rejected as equal to a pool text), the candidate pairs
    (``rouge``: pairs scored with the LCS; ``minhash``: pool texts the LSH
    proposed) and, for verified ``minhash``, the candidates scored with the
    LCS (``scored``).
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
        self.stats = {"accepted": 0, "rejected": 0, "exact": 0, "candidates": 0, "scored": 0, "indexed": 0}
        self._embed = embed
        self._seen: set[str] = set()
        self.members: set[str] = set()  # every text in the pool, as given
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

    def extend(self, texts: Sequence[str]) -> int:
        """Add to the pool the texts it does not hold yet (unchecked, like
        the initial pool); returns how many were added."""
        new = [t for t in dict.fromkeys(texts) if t not in self.members]
        if new:
            self._add_pool(new)
        return len(new)

    def _run(self, texts: list[str], add: bool) -> list[bool]:
        out = self._run_method(texts, add)
        if add:
            accepted = [t for t, ok in zip(texts, out) if ok]
            self.members.update(accepted)
            self.stats["indexed"] += len(accepted)
        return out

    def _run_method(self, texts: list[str], add: bool) -> list[bool]:
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
        self.members.update(pool)
        self.stats["indexed"] += len(pool)
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

    # -- minhash (datasketch) --------------------------------------------------

    def _init_minhash(self) -> None:
        try:
            from datasketch import MinHashLSH
        except ImportError:  # pragma: no cover - depends on the install
            raise TapirError("de-dup method 'minhash' needs datasketch (pip install 'tapir-distill[local]'), "
                             "or use method=rouge") from None

        from tapir.dedup_bands import BandIndex

        self._jaccard = jaccard_for_rouge(self.threshold)
        # datasketch picks the bands and rows: the weights favour recall (a
        # missed duplicate stays in the data, a false candidate costs one
        # exact ROUGE-L check). The index itself is tapir.dedup_bands (the same
        # candidates in a twentieth of datasketch's memory).
        lsh = MinHashLSH(threshold=self._jaccard, num_perm=self.num_perm, weights=LSH_WEIGHTS)
        self.bands, self.rows = lsh.b, lsh.r
        self._bands = BandIndex(self.bands, self.rows)
        self._sketches: list = []  # LeanMinHash per pool text (None when tokenless), only when verify=False

    def _minhashes(self, tokens: Iterable[list[str]]):
        """datasketch MinHashes of each token list's set of words (lazily;
        an empty list gives an empty MinHash, never indexed)."""
        from datasketch import MinHash

        return MinHash.generator((set(toks) for toks in tokens), num_perm=self.num_perm, seed=self.seed,
                                 hashfunc=_word_hash)

    def _remember(self, tokens: list[str], minhash) -> int:
        """Keep a pool text's tokens (and sketch); returns its index. The
        caller adds it to the band index."""
        key = self._size
        self._tokens.append(tokens)
        self._size += 1
        if not self.verify:
            from datasketch import LeanMinHash

            self._sketches.append(LeanMinHash(minhash) if tokens else None)
        return key

    def _add_minhash_pool(self, pool: list[str]) -> None:
        import numpy as np

        tokens = [tokenize(t) for t in pool]
        keys, values = [], []
        for toks, minhash in zip(tokens, self._minhashes(tokens)):
            key = self._remember(toks, minhash)
            if toks:
                keys.append(key)
                values.append(minhash.hashvalues)
        if keys:
            self._bands.add_many(keys, np.stack(values))

    def _accept_minhash(self, texts: list[str], add: bool) -> list[bool]:
        import numpy as np

        tokens = [tokenize(t) for t in texts]
        minhashes = self._minhashes(tokens)
        out = []
        bands = self._bands
        for start in range(0, len(texts), _QUERY_CHUNK):
            chunk = range(start, min(len(texts), start + _QUERY_CHUNK))
            hashes = [next(minhashes) for _ in chunk]
            numbers = bands.band_numbers(np.stack([m.hashvalues for m in hashes]))
            stored = bands.stored_candidates(numbers)  # the arrays do not change within a chunk
            for j, i in enumerate(chunk):
                text, toks, minhash = texts[i], tokens[i], hashes[j]
                duplicate = self._exact_duplicate(text)
                if not duplicate and toks:
                    found = stored[j] | bands.waiting_candidates(numbers[j])
                    self.stats["candidates"] += len(found)
                    if found and self.verify:
                        duplicate = self._verified_duplicate(toks, found)
                    elif found:
                        duplicate = any(minhash.jaccard(self._sketches[key]) >= self._jaccard for key in found)
                if not duplicate and add:
                    self._seen.add(_normal(text))
                    key = self._remember(toks, minhash)
                    if toks:
                        bands.add(key, numbers[j])
                out.append(not duplicate)
            bands.settle()
        return out

    def _verified_duplicate(self, toks: list[str], found: Iterable[int]) -> bool:
        """Whether a candidate's exact ROUGE-L F1 with ``toks`` is >= t.
        Two upper bounds on the LCS skip most false candidates before the
        LCS itself: the shorter length, and the shared words (the distinct
        words in common, plus the repeated tokens of ``toks``, bound the
        multiset overlap, hence the LCS)."""
        t = self.threshold
        m = len(toks)
        masks = _masks(toks)
        words = set(masks)
        repeats = m - len(words)
        pool = self._tokens
        for key in found:
            other = pool[key]
            n = len(other)
            if not n or 2.0 * min(m, n) / (m + n) < t:
                continue
            if 2.0 * (len(words.intersection(other)) + repeats) / (m + n) < t:
                continue
            self.stats["scored"] += 1
            if 2.0 * _lcs_with_masks(masks, m, other) / (m + n) >= t:
                return True
        return False

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


_KEPT: dict[tuple, NearDuplicateFilter] = {}


def pool_filter(
    method: str,
    threshold: float,
    pool: Sequence[str],
    embed: Callable[[list[str]], "np.ndarray"] | None = None,
    *,
    embed_key: str | None = None,
    num_perm: int = 256,
    verify: bool = True,
    seed: int = 1,
) -> NearDuplicateFilter:
    """A filter whose pool is ``pool``: the one kept from the last call with
    the same settings when every text it holds is in ``pool`` (then only the
    texts it lacks are added), else a new one, which is kept in its place.
    One filter is kept per process (the latest). ``embed_key`` names the
    ``embed`` function (e.g. the encoder); without it an ``embedding``
    filter is never kept."""
    key = (method, float(threshold), int(num_perm), bool(verify), int(seed), embed_key)
    kept = _KEPT.get(key)
    if kept is not None and (method != "embedding" or embed_key is not None):
        wanted = set(pool)
        if kept.members <= wanted:
            kept.extend(pool)
            return kept
    _KEPT.clear()
    made = NearDuplicateFilter(method, threshold, pool, embed, num_perm=num_perm, verify=verify, seed=seed)
    if method != "embedding" or embed_key is not None:
        _KEPT[key] = made
    return made


def forget_filters() -> None:
    """Drop the kept filter (its memory goes with it)."""
    _KEPT.clear()


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "NearDuplicateFilter",
    "forget_filters",
    "jaccard_for_rouge",
    "lcs_length",
    "pool_filter",
    "rouge_l",
    "rouge_l_text",
    "tokenize",
]
