"""The record a rewriter returns per item.

``Rewrite`` belongs in :mod:`tapir.roles`; until the core defines it there,
it is defined here under the same name and fields (the core's one wins as
soon as it exists, so both sides always share one class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

try:  # the core's record, once tapir/roles.py has it
    from tapir.roles import Rewrite  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised until the core moves it

    @dataclass
    class Rewrite:
        """One item's rewrite.

        ``instruction`` is the refined instruction (equal to the original when
        the instruction was not refined); ``answer`` the enhanced answer the
        student trains on, paired with the *original* instruction. A failed
        rewrite sets ``error`` (a reason a person can read) and is never the
        original item passed off as rewritten. ``call_ids`` are the
        ``llm_calls`` rows used (:attr:`tapir.roles.Completion.call_id`).
        """

        instruction: str
        answer: str
        error: str | None = None
        call_ids: list[int] = field(default_factory=list)


__all__ = ["Rewrite"]
