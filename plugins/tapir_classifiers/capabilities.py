"""The classifiers' capabilities (tapir.roles.CAPABILITIES), named in
their register(...) calls with ``capabilities="tapir_classifiers.capabilities:LLM"``
(llm) or ``...:Labelled`` (centroid, encoder) so that registering them
imports this module, not the classifiers'. Each answers through the class
or the labelled-file reader, imported only when asked."""

from __future__ import annotations

from typing import Any


def _labels_problems(options: Any) -> list[str]:
    """The labelled file ``options.labels_path`` (every classifier here has
    the option) read as the classifier reads it (a bad line, an unknown task
    type, no rows): found before the run."""
    if not options.labels_path:
        return []
    from tapir.errors import TapirError
    from tapir_classifiers.labelled import load_labelled

    try:
        load_labelled(options.labels_path)
    except TapirError as exc:
        return [f"{exc}. Fix the file (JSONL rows with instruction, input, task_type), or point labels_path "
                f"at another"]
    return []


class Labelled:
    """The centroid and encoder classifiers' capabilities (the llm one's too)."""

    @staticmethod
    def input_problems(options: Any) -> list[str]:
        return _labels_problems(options)


class LLM(Labelled):
    @staticmethod
    def generation(options: Any) -> Any:
        from tapir_classifiers.llm import LLMClassifier

        return LLMClassifier.generation(options)
