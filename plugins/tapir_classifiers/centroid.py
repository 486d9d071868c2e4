"""Nearest-centroid task classifier on sentence embeddings (no training).

Each task type's centroid is the normalised mean of the MiniLM embeddings of
its labelled examples; a text gets the label of the most cosine-similar
centroid. Confidence is a softmax over the similarities divided by a
temperature.
"""

from __future__ import annotations

from typing import Any, Sequence

from tapir.options import InputFile, Options, option
from tapir_classifiers.labelled import Example, load_labelled, present_labels

DEFAULT_TEMPERATURE = 0.05
# Texts embedded at a time. A multiple of embed's batch (64): the chunks cut the
# length-ordered texts where the batches are cut anyway, so every batch, and
# every embedding, is the one the whole list would give.
CHUNK = 2048


class CentroidClassifier:
    """Nearest centroid over ``tapir_hf.encoder.embed`` embeddings (the
    encoder comes from the tapir_hf plugin; the core never imports it)."""

    needs_model = False

    class Options(Options):
        labels_path: InputFile | None = option(
            None, "labelled JSONL the centroids are built from (default the shipped seed set)")
        examples: list[Any] | None = option(
            None, "in-process only: labelled Example objects to build the centroids from, instead of labels_path")
        encoder: str = option("minilm", "sentence encoder: 'minilm' (embedded) or an encoder folder / hub id")
        temperature: float = option(DEFAULT_TEMPERATURE, "softmax temperature of the confidence", gt=0)

    def __init__(self, backend: Any, options: "CentroidClassifier.Options"):
        self.options = options
        self.encoder = options.encoder
        self._model = None  # (tokenizer, model), loaded at the first embedding; freed with this classifier
        self.temperature = float(options.temperature)
        examples = options.examples
        self.fit(list(examples) if examples is not None else load_labelled(options.labels_path))

    def fit(self, examples: Sequence[Example]) -> "CentroidClassifier":
        from tapir_hf.encoder import encoder_fingerprint

        from tapir_classifiers import centroid_cache

        fingerprint = encoder_fingerprint(self.encoder)
        key = centroid_cache.cache_key(examples, fingerprint) if fingerprint else None
        cached = centroid_cache.load(key) if key else None
        if cached is not None:
            self.labels, self.centroids = cached
            return self
        self.labels, self.centroids = self._centroids(examples)
        if key:
            centroid_cache.save(key, self.labels, self.centroids)
        return self

    def _centroids(self, examples: Sequence[Example]):
        """(labels, unit-norm mean embedding per label) of ``examples``."""
        import numpy as np
        from tapir_hf.encoder import embed

        labels = present_labels(examples)
        vectors = embed([ex.text for ex in examples], self.encoder, encoder=self.model())
        index = {label: i for i, label in enumerate(labels)}
        sums = np.zeros((len(labels), vectors.shape[1]), dtype="float32")
        for ex, vec in zip(examples, vectors):
            sums[index[ex.label]] += vec
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return labels, sums / np.maximum(norms, 1e-9)

    def similarities(self, texts: Sequence[str], chunk: int | None = None):
        """Cosine similarity of each text to each centroid (rows: texts),
        embedded ``chunk`` texts at a time: only one chunk's embeddings are
        held (384 floats a text for MiniLM), not every text's (default :data:`CHUNK`)."""
        import numpy as np
        from tapir_hf.encoder import embed

        from tapir_classifiers.batching import length_order

        texts = list(texts)
        order = length_order(texts)  # batches of alike lengths pad less
        sims = np.empty((len(texts), len(self.centroids)), dtype="float32")
        chunk = chunk or CHUNK
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            sims[part] = embed([texts[i] for i in part], self.encoder, encoder=self.model()) @ self.centroids.T
        return sims

    def model(self):
        """This classifier's own encoder (tokenizer, model), not the process's
        cached one: it lives as long as the classifier (the pipeline drops the
        classifier after the classify stage, and with it the encoder)."""
        if self._model is None:
            from tapir_hf.encoder import open_encoder

            self._model = open_encoder(self.encoder)
        return self._model

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        import numpy as np

        if not texts:
            return []
        logits = self.similarities(texts) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [(self.labels[j], float(probs[i, j])) for i, j in enumerate(best)]
