"""Task-type classifiers: LLM prompt, fine-tuned encoder, nearest centroid.

Each class declares its options as a nested ``Options`` model
(:mod:`tapir.options`) and is built as ``Class(backend, options)``
(``backend`` is ``None`` unless the config names a model) by the registry's
``Component.create``; it has ``labels``, ``needs_model`` and
``classify(texts) -> [(label, confidence)]`` (:class:`tapir.roles.Classifier`).
``tapir classifier train|eval|label`` live in :mod:`tapir_classifiers.cli`.
"""

from __future__ import annotations

from tapir import hookimpl

_TORCH = ("torch", "transformers")


@hookimpl
def register_classifiers(register):
    register(
        "llm",
        "tapir_classifiers.llm:LLMClassifier",
        description="a chat model picks one task type from the list (lenient parsing, one nudge, else Others)",
        flags={"needs_model": True},  # as the class says (tests/test_capabilities.py compares them)
        capabilities="tapir_classifiers.capabilities:LLM",
    )
    register(
        "encoder",
        "tapir_classifiers.encoder:EncoderClassifier",
        description="MiniLM (or any encoder) fine-tuned with a classification head on labelled instructions",
        requires=_TORCH,
        extra="local",
        flags={"needs_model": False},
        capabilities="tapir_classifiers.capabilities:Labelled",
    )
    register(
        "centroid",
        "tapir_classifiers.centroid:CentroidClassifier",
        description="nearest centroid of labelled examples on MiniLM sentence embeddings; no training",
        requires=_TORCH,
        extra="local",
        flags={"needs_model": False},
        capabilities="tapir_classifiers.capabilities:Labelled",
    )


@hookimpl
def register_commands(cli):
    from tapir_classifiers.cli import register

    register(cli)
