"""The judges' capabilities (tapir.roles.CAPABILITIES), named in their
register(...) calls with ``capabilities="tapir_judges.capabilities:NAME"``
so that registering a judge imports this module, not the judge's. Each
answers through the judge class, imported only when asked."""

from __future__ import annotations

from typing import Any


class Pairwise:
    @staticmethod
    def estimate(stage: str, n: int, prompt_tokens: int, options: Any) -> list:
        from tapir_judges.pairwise import PairwiseJudge

        return PairwiseJudge.estimate(stage, n, prompt_tokens, options)

    @staticmethod
    def generation(options: Any) -> Any:
        from tapir_judges.pairwise import PairwiseJudge

        return PairwiseJudge.generation(options)


class Single:
    @staticmethod
    def generation(options: Any) -> Any:
        from tapir_judges.single import MTBenchSingleJudge

        return MTBenchSingleJudge.generation(options)


class Preference:
    @staticmethod
    def generation(options: Any) -> Any:
        from tapir_judges.preference import PreferenceJudge

        return PreferenceJudge.generation(options)
