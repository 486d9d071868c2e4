"""What a recipe is made of: a :class:`Step` (a stage at a round, with its
upstream nodes), a step's :class:`StageResult`, and the exceptions that end
a stage (:class:`StageFailed`, :class:`StageStopped`). The ``Stage``
protocol and the :class:`~tapir.pipeline.job.Job` a stage runs with are in
:mod:`tapir.pipeline.job`; the engine that runs the steps, :mod:`tapir.pipeline.engine`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapir.errors import TapirError

Node = tuple[str, int]  # (stage name, round)
Upstream = tuple[str, int | None]  # (stage name, round); round None: every round of that stage


class StageFailed(TapirError):
    """A stage ended above its failure threshold (the CLI exits 1)."""

    exit_code = 1


class StageStopped(StageFailed):
    """A stage stopped before its end: a permanent failure (quota, key, model,
    context length) or the circuit breaker (the same failure many times in a
    row). Nothing more is sent; the CLI exits 1."""


@dataclass(frozen=True)
class Step:
    """One node of a recipe: a stage at a round, its upstream nodes and the
    recipe's options for it (part of its key)."""

    stage: str
    round: int = 0
    after: tuple[Node, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def node(self) -> Node:
        return (self.stage, self.round)

    @property
    def label(self) -> str:
        return f"{self.stage}" + (f" (round {self.round})" if self.round else "")

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


@dataclass
class StageResult:
    """What a run learns about a node: its key, status and counts."""

    step: Step
    key: str
    status: str = "pending"  # pending | done | failed | reused
    reused_from: str | None = None
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    truncated: int = 0
    final: int = 0  # failed items a re-run will not retry (draws used up, or the same inputs reproduce them)
    attempts: int = 0  # requests sent for the calls (retries and timed-out ones included)
    maybe_billed: int = 0  # attempts that timed out or broke: the server may have generated (billed) them
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
