"""Issue 20 item 7: the de-dup index persists across rounds (a round hashes
only its new pool rows), with the verdicts of a filter built from scratch."""

from __future__ import annotations

import random

import pytest

from tapir import dedup
from tapir.dedup import NearDuplicateFilter, forget_filters, pool_filter

WORDS = ("river mountain ledger violin protein harvest orbit lantern glacier canyon satellite compiler sonnet "
         "fossil courtroom vaccine tariff prism meadow algorithm parliament enzyme marathon comet sculpture "
         "ballad gravity vineyard archive molecule falcon quartz harbor pepper tundra beacon").split()


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 7)) + f" {rng.randint(0, 99)}" for _ in range(n)]


@pytest.fixture(autouse=True)
def _fresh():
    forget_filters()
    yield
    forget_filters()


@pytest.mark.parametrize("method", ["minhash", "rouge", "none"])
def test_round_two_indexes_only_its_new_rows(method, monkeypatch):
    ingest = texts(300, 1)
    first = pool_filter(method, 0.7, ingest)
    assert first.stats["indexed"] == 300
    accepted = [t for t, ok in zip(texts(80, 2), first.accept_many(texts(80, 2))) if ok]
    assert first.stats["indexed"] == 300 + len(accepted)
    # Round 2's pool: the instructions, round 1's accepted ones, and rows the filter has not seen.
    new_rows = texts(25, 3)
    hashed = []
    original = NearDuplicateFilter._add_pool
    monkeypatch.setattr(NearDuplicateFilter, "_add_pool", lambda self, pool: (hashed.extend(pool), original(self, pool)))
    second = pool_filter(method, 0.7, ingest + accepted + new_rows)
    assert second is first
    assert sorted(hashed) == sorted(set(new_rows) - set(ingest) - set(accepted))
    assert second.stats["indexed"] == 300 + len(accepted) + len(hashed)
    assert len(second) == 300 + len(accepted) + len(hashed)


@pytest.mark.parametrize("method", ["minhash", "rouge"])
def test_kept_filter_gives_the_verdicts_of_a_new_one(method):
    ingest, round1, extra, probe = texts(200, 4), texts(60, 5), texts(30, 6), texts(120, 7)
    kept = pool_filter(method, 0.5, ingest)
    accepted = [t for t, ok in zip(round1, kept.accept_many(round1)) if ok]
    kept = pool_filter(method, 0.5, ingest + accepted + extra)
    fresh = NearDuplicateFilter(method, 0.5, list(reversed(ingest + accepted + extra)))
    # Near-duplicates of pool texts (one word changed) and unrelated texts.
    near = [t.rsplit(" ", 1)[0] + " 1000" for t in (ingest[:20] + accepted[:20] + extra[:20])]
    mixed = probe + near
    assert kept.duplicates(mixed) == fresh.duplicates(mixed)
    assert sum(kept.duplicates(near)) == len(near)
    assert kept.accept_many(mixed) == fresh.accept_many(mixed)


def test_a_pool_without_the_kept_texts_builds_a_new_filter():
    a = pool_filter("minhash", 0.7, texts(50, 8))
    a.accept_many(texts(10, 9))
    other = texts(50, 10)  # another run's pool: the kept filter holds texts outside it
    b = pool_filter("minhash", 0.7, other)
    assert b is not a
    assert b.stats["indexed"] == 50 and b.members == set(other)
    # Other settings never share a filter.
    c = pool_filter("minhash", 0.8, other)
    assert c is not b
    assert len(dedup._KEPT) == 1


def test_embedding_filter_is_kept_only_with_a_key():
    import numpy as np

    def embed(ts):
        return np.array([[len(t), t.count("a") + 1.0] for t in ts], dtype="float32")

    pool = texts(20, 11)
    assert pool_filter("embedding", 0.99, pool, embed) is not pool_filter("embedding", 0.99, pool, embed)
    kept = pool_filter("embedding", 0.99, pool, embed, embed_key="toy")
    assert pool_filter("embedding", 0.99, pool + ["zz"], embed, embed_key="toy") is kept
    assert kept.stats["indexed"] == 21
