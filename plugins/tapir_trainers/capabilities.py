"""The trainers' capabilities (tapir.roles.CAPABILITIES), named in their
register(...) calls with ``capabilities="tapir_trainers.capabilities:NAME"``
so that registering a trainer imports this module, not the trainer's.
Each answers through the trainer class, imported only when asked."""

from __future__ import annotations

from typing import Any


class HF:
    @staticmethod
    def steps_for(options: Any, n_examples: int) -> int | None:
        from tapir_trainers.hf_trainer import HFTrainer

        return HFTrainer.steps_for(options, n_examples)

    @staticmethod
    def max_length(options: Any) -> int | None:
        from tapir_trainers.hf_trainer import HFTrainer

        return HFTrainer.max_length(options)


class TRL:
    @staticmethod
    def steps_for(options: Any, n_examples: int) -> int | None:
        from tapir_trainers.trl_trainer import TRLTrainer

        return TRLTrainer.steps_for(options, n_examples)

    @staticmethod
    def max_length(options: Any) -> int | None:
        from tapir_trainers.trl_trainer import TRLTrainer

        return TRLTrainer.max_length(options)
