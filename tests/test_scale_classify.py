"""Issue 20 item 7: the encoder classifiers run their model on batches of
alike lengths (less padding) and give each text its own result back."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import tapir_hf.encoder
from tapir_classifiers.batching import by_length, length_order
from tapir_classifiers.centroid import CentroidClassifier
from tapir_classifiers.encoder import EncoderClassifier
from tapir_classifiers.labelled import Example

TEXTS = ["short one", "a much longer text about rivers and mountains and ledgers", "mid length text here",
         "x", "another fairly long text about violins", "tiny", "medium sized words"]


def fake_vector(text: str) -> np.ndarray:
    digest = hashlib.sha256(text.encode()).digest()
    v = np.frombuffer(digest[:16], dtype=np.uint8).astype("float32") - 127.5
    return v / np.linalg.norm(v)


def test_length_order_is_longest_first_and_stable():
    order = length_order(["ab", "abcd", "cd", "a", "abcd"])
    assert order == [1, 4, 0, 2, 3]
    assert by_length(lambda ts: [t.upper() for t in ts], ["ab", "abcd", "a"]) == ["AB", "ABCD", "A"]


def test_centroid_embeds_in_length_order_and_maps_back(monkeypatch):
    calls: list[list[str]] = []

    def embed(texts, name="minilm", **_):
        calls.append(list(texts))
        return np.stack([fake_vector(t) for t in texts]) if texts else np.zeros((0, 16), "float32")

    monkeypatch.setattr(tapir_hf.encoder, "embed", embed)
    examples = [Example(id=str(i), instruction=t, input="", label=label) for i, (t, label) in enumerate(
                [("write a poem", "Writing"), ("solve 2+2", "Math"), ("a story please", "Writing"),
                 ("compute the sum", "Math")])]
    clf = CentroidClassifier(None, CentroidClassifier.Options(examples=examples))
    calls.clear()
    got = clf.classify(TEXTS)
    assert len(calls) == 1 and calls[0] == sorted(TEXTS, key=len, reverse=True)
    one_by_one = [clf.classify([t])[0] for t in TEXTS]
    assert [label for label, _ in got] == [label for label, _ in one_by_one]
    assert [c for _, c in got] == pytest.approx([c for _, c in one_by_one], abs=1e-6)
    assert clf.classify([]) == []


def test_encoder_classifier_batches_by_length(monkeypatch):
    seen: list[list[str]] = []

    def batches(self, texts):
        seen.append(list(texts))
        return [(f"L{len(t)}", 1.0) for t in texts]

    monkeypatch.setattr(EncoderClassifier, "_classify_batches", batches)
    clf = EncoderClassifier.__new__(EncoderClassifier)
    got = clf.classify(TEXTS)
    assert seen == [sorted(TEXTS, key=len, reverse=True)]
    assert got == [(f"L{len(t)}", 1.0) for t in TEXTS]
