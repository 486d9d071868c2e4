"""The llm classifier's capabilities (tapir.roles.CAPABILITIES), named in
its register(...) call with ``capabilities="tapir_classifiers.capabilities:LLM"``
so that registering it imports this module, not the classifier's. Each
answers through the class, imported only when asked."""

from __future__ import annotations

from typing import Any


class LLM:
    @staticmethod
    def generation(options: Any) -> Any:
        from tapir_classifiers.llm import LLMClassifier

        return LLMClassifier.generation(options)
