"""Issue 20 item 7: the centroid classifier embeds its texts a chunk at a
time (only one chunk's embeddings are held), with the labels of embedding
them all at once and the same confidences to within float32 rounding."""

from __future__ import annotations

import random

import numpy as np
import pytest

import tapir_hf.encoder
from tapir_classifiers import centroid
from tapir_classifiers.centroid import CentroidClassifier
from tapir_classifiers.labelled import load_labelled

from test_classifiers import SEED

WORDS = ("river mountain ledger violin protein harvest orbit lantern glacier canyon satellite compiler sonnet "
         "fossil courtroom vaccine tariff prism meadow algorithm parliament enzyme marathon comet").split()
FRAMES = ["Calculate the {a} of {n} {b}.", "Write a Python function that sorts a list of {a} by {b}.",
          "Write a short poem about a {a} near the {b}.", "Summarize this paragraph about the {a} and the {b}.",
          "Translate '{a} {b}' into German.", "Is a {a} a {b}? Answer with one word.",
          "List {n} creative ways to use a {a} at a {b}.", "Why does a {a} glow when the {b} is cold?"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = [rng.choice(FRAMES).format(a=rng.choice(WORDS), b=rng.choice(WORDS), n=rng.randint(2, 99))
           + " " * rng.randint(0, 3) + " ".join(rng.sample(WORDS, rng.randint(0, 12)))  # varied lengths
           for _ in range(n)]
    return out


@pytest.fixture(scope="module")
def clf():
    return CentroidClassifier(None, CentroidClassifier.Options(examples=load_labelled(SEED)))


def test_chunk_is_a_multiple_of_the_encoders_batch():
    # Chunks then cut the length-ordered texts where embed's batches are cut anyway.
    assert centroid.CHUNK % 64 == 0 and centroid.CHUNK >= 1024


def test_chunked_labels_and_confidences_match_the_whole(clf, monkeypatch):
    batch = texts(2200)
    monkeypatch.setattr(centroid, "CHUNK", 10**9)  # one chunk: every text embedded at once, as before
    whole = clf.classify(batch)
    monkeypatch.setattr(centroid, "CHUNK", 512)  # 5 chunks, the last one short
    chunked = clf.classify(batch)
    assert [label for label, _ in chunked] == [label for label, _ in whole]
    assert max(abs(a - b) for (_, a), (_, b) in zip(chunked, whole)) < 1e-5
    assert len({label for label, _ in whole}) > 3  # the texts spread over several types


def test_only_a_chunk_of_texts_is_embedded_at_once(clf, monkeypatch):
    sizes: list[int] = []

    def embed(batch, name="minilm", **kw):
        sizes.append(len(batch))
        return np.ones((len(batch), clf.centroids.shape[1]), dtype="float32")

    monkeypatch.setattr(tapir_hf.encoder, "embed", embed)
    assert len(clf.classify(texts(300))) == 300  # fewer than a chunk: one call
    assert sizes == [300]
    sizes.clear()
    monkeypatch.setattr(centroid, "CHUNK", 256)
    assert clf.similarities(texts(700)).shape == (700, len(clf.labels))
    assert sizes == [256, 256, 188]


def test_the_classifier_owns_its_encoder_and_frees_it_with_itself():
    """The centroid classifier runs its own encoder, not the process-wide
    cache of tapir_hf.encoder.load_encoder, so dropping the classifier frees
    the model (about 90 MB for MiniLM)."""
    import gc
    import weakref

    from tapir_hf.encoder import load_encoder

    load_encoder.cache_clear()
    own = CentroidClassifier(None, CentroidClassifier.Options(examples=load_labelled(SEED)))
    assert own.classify(["Write a short poem about the sea."])[0][0]
    assert load_encoder.cache_info().currsize == 0  # nothing kept for the process
    model = weakref.ref(own.model()[1])
    assert own.model()[1] is model()  # loaded once, for every later call
    del own
    gc.collect()
    assert model() is None


def test_the_classify_stage_drops_the_classifier_when_done(monkeypatch):
    import contextlib
    from types import SimpleNamespace

    from tapir.pipeline.context import Context
    from tapir.pipeline.stages import classify as classify_stage
    from tapir.roles import Item

    monkeypatch.setattr(classify_stage, "set_labels", lambda store, key, name, rows: None)
    ctx = Context.__new__(Context)  # only the roles and the reads the stage makes
    ctx._roles = {"classifier": SimpleNamespace(needs_model=False, classify=lambda texts: [("Math", 0.9)] * len(texts))}
    ctx.config = SimpleNamespace(classifier=SimpleNamespace(name="fake"))
    ctx.store = SimpleNamespace(transaction=contextlib.nullcontext)
    ctx.items = lambda scope: [Item("a", "2+2?"), Item("b", "3+3?")]
    ctx.labels = lambda key: {"a": "Math", "b": "Math"}
    done: list[str] = []
    job = SimpleNamespace(ctx=ctx, key="k", info={}, scope=lambda stage: "s", todo=lambda ids: list(ids),
                          ok=done.append, fail=lambda *a, **k: None)
    classify_stage.Classify().run(job)
    assert done == ["a", "b"] and job.info["counts"] == {"Math": 2}
    assert "classifier" not in ctx._roles  # freed: no later stage classifies
    ctx.drop_role("classifier")  # dropping what is not there is fine
