"""A stage and what it sees while it runs: the :class:`Stage` protocol the
engine calls, and the :class:`Job` it runs with (its step and key, the
config view and context it may read, the keys of its upstream nodes, and the
recorder of its items' outcomes, with the fresh draws of content failures
and the circuit breaker). The engine (:mod:`tapir.pipeline.engine`) makes a
Job per step it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from tapir.pipeline.reads import ConfigView, UndeclaredRead
from tapir.pipeline.steps import Node, StageResult, StageStopped, Step, Upstream
from tapir.store import outcomes as outcome_rows
from tapir.store.db import Store, utcnow

# Kinds of Job.fail that come from a failed call (a judge's or rewriter's): they feed the
# circuit breaker. A parse failure, a cut answer or a duplicate does not.
BREAKER_KINDS = frozenset({"error", "rewrite"})


class Stage(Protocol):
    """What the engine calls. ``reads`` names the config fields the stage
    depends on (dotted paths; or a function of the round giving them);
    ``upstream`` gives the nodes whose rows it reads at a step, as (stage,
    round) pairs, round None for every round of that stage (the recipe wires
    each step to those it holds: a node the recipe leaves out reads as
    None); ``version`` changes when its code changes what it produces;
    ``max_failure_rate`` is its default failure threshold."""

    name: str
    reads: tuple[str, ...] | Callable[[int], tuple[str, ...]]
    version: str
    max_failure_rate: float

    def upstream(self, step: Step) -> Iterable[Upstream]: ...

    def run(self, job: "Job") -> None: ...


def reads_of(stage: Stage, round: int) -> tuple[str, ...]:
    """The config fields ``stage`` reads at ``round``: ``reads`` is a tuple,
    or a function of the round when a round reads more than another."""
    return stage.reads(round) if callable(stage.reads) else stage.reads


class StepRunner(Protocol):
    """What a :class:`Job` asks of the engine that made it
    (:class:`tapir.pipeline.engine.Engine`)."""

    ctx: Any
    stages: dict[str, Stage]
    by_node: dict[Node, Step]  # the recipe's steps (stages read which rounds it holds)
    results: dict[Node, StageResult]
    max_draws: int  # draws an item whose reply fails on its content gets in all
    circuit_breaker: int  # failures of one kind in a row that stop a stage (0: never)

    @property
    def has_draws(self) -> bool: ...

    def key_of(self, node: Node) -> str | None: ...

    def draw_note(self, draws: int, reproduces: bool) -> str: ...

    def breaker_message(self, step: Step, count: int, item_id: str, reason: str, kind: str) -> str: ...


class Job:
    """What a stage sees while it runs: its step and key, the pipeline
    context (config, roles, store), the keys of its upstream nodes, and the
    outcome recorder."""

    def __init__(self, engine: StepRunner, step: Step, key: str, retry: bool):
        self.engine = engine
        self.step = step
        self.key = key
        self.round = step.round
        stage = engine.stages[step.stage]
        # The config as this stage may read it, and a context whose roles read through it.
        self.config = ConfigView(engine.ctx.config, reads_of(stage, step.round), step.label)
        self.ctx = engine.ctx.for_stage(self.config)
        self.store: Store = engine.ctx.store
        self.retry = retry
        self.info: dict[str, Any] = {}
        self._outcomes: list[tuple] = []
        self._known: dict[str, str] | None = None
        self._draws: dict[str, tuple[int | None, int | None]] = {}  # failed item -> (draws, reproduces)
        self.redrawn: dict[str, int] = {}  # item -> the fresh draw this run asks for it (1 = the second draw)
        self._upstream = tuple(stage.upstream(step))
        self._streak: tuple[Any, int] = (None, 0)  # (kind, status, error class) of the failures in a row, and how many
        self.stopped: tuple | None = None  # (item, reason, cause, status) of a permanent failure

    # -- upstream -------------------------------------------------------------

    def declares(self, stage: str, round: int) -> bool:
        """Whether this step may read node (stage, round): itself, or one its stage declares upstream."""
        node = (stage, round)
        return (node == self.step.node or node in self.step.after
                or any(name == stage and r in (None, round) for name, r in self._upstream))

    def _check(self, stage: str, round: int) -> None:
        if not self.declares(stage, round):
            raise UndeclaredRead(
                f"stage '{self.step.label}' read node {stage} (round {round}), which its stage does not "
                f"declare upstream: add it to {self.step.stage}.upstream (so its key depends on that node)")

    def scope(self, stage: str, round: int = 0) -> str | None:
        """The key of upstream node (stage, round), or None when the recipe has none.
        Reading a node the stage does not declare raises :class:`UndeclaredRead`."""
        self._check(stage, round)
        return self.engine.key_of((stage, round))

    def upstream_info(self, stage: str, round: int = 0) -> dict[str, Any]:
        """The stage info of upstream node (stage, round) ({} when the recipe has none)."""
        self._check(stage, round)
        result = self.engine.results.get((stage, round))
        return result.info if result else {}

    # -- outcomes -------------------------------------------------------------

    def known(self) -> dict[str, str]:
        """item id -> status for the items this key already handled."""
        if self._known is None:
            rows = outcome_rows.known_outcomes(self.store, self.key, with_draws=self.engine.has_draws)
            self._known = {item: status for item, status, _, _ in rows}
            self._draws = {item: (draws, reproduces) for item, status, draws, reproduces in rows
                           if status == "failed"}
        return self._known

    def retries(self, item_id: str) -> bool:
        """Whether a re-run asks a failed item again: a failed call, yes; a
        content failure, while draws are left and the same inputs do not
        reproduce it."""
        self.known()
        draws, reproduces = self._draws.get(item_id, (None, None))
        return draws is None or (not reproduces and draws < self.engine.max_draws)

    def todo(self, item_ids: Iterable[str]) -> list[str]:
        """The items still to do: not ok yet (failed ones only when retrying,
        and only those :meth:`retries` says a re-run asks again)."""
        known = self.known()
        out = []
        for i in item_ids:
            status = known.get(i)
            if status == "ok" or (status == "failed" and not (self.retry and self.retries(i))):
                continue
            if status == "failed" and self.draw(i):
                self.redrawn[i] = self.draw(i)
            out.append(i)
        return out

    def draw(self, item_id: str) -> int:
        """The draw this run asks for an item: 0 at first; after n draws that
        failed on their content, n (a stage turns it into a new sample index,
        so the cache does not serve the failed reply again)."""
        self.known()
        draws, _ = self._draws.get(item_id, (None, None))
        return draws or 0

    def ok(self, item_id: str, call_id: int | None = None, attempts: int = 1) -> None:
        self._streak = (None, 0)
        self._outcomes.append((self.key, item_id, "ok", None, None, None, call_id, attempts, utcnow(), None, None))
        self.known()[item_id] = "ok"
        self._maybe_flush()

    def fail(self, item_id: str, reason: str, kind: str = "error", http_status: int | None = None,
             call_id: int | None = None, attempts: int = 1, breaker: bool | None = None, *,
             content: bool = False, reproduces: bool = False) -> None:
        """Record a failed item. ``breaker``: whether the failure counts for the
        circuit breaker (default: for the kinds a failed call gets, BREAKER_KINDS).
        ``content``: the reply came but failed on its content (malformed,
        rejected): a re-run asks again with a fresh draw, unless
        ``reproduces`` (the same inputs give the same reply) or the draws are
        used up; the reason then says so and names the option that changes it."""
        from tapir.runs import redact_text

        self.known()
        # A failed call keeps the item's draw count: the re-run asks the same draw again.
        draws, reproduce = self._draws.get(item_id, (None, None))[0], None
        if content:
            draws, reproduce = self.draw(item_id) + 1, int(bool(reproduces))
            reason += self.engine.draw_note(draws, bool(reproduces))
        self._outcomes.append((self.key, item_id, "failed", redact_text(reason)[:2000], kind, http_status,
                               call_id, attempts, utcnow(), draws, reproduce))
        self.known()[item_id] = "failed"
        self._maybe_flush()
        if breaker or (breaker is None and kind in BREAKER_KINDS):
            self._trip(kind, http_status, item_id, reason, reason)

    def fail_completion(self, item_id: str, completion, what: str = "") -> None:
        """Record a failed LLM call as the item's failure, with its kind and status.

        A *permanent* failure (out of quota, key refused, no such model,
        context too long) stops the stage: every other item would fail the
        same way (the API backend sends nothing more and raises
        :class:`tapir.errors.PermanentFailure` once what was in flight is in;
        the engine names the stage). Other failures feed the circuit breaker."""
        error = completion.error or "empty reply"
        kind = error_kind(completion)
        reason = (what + ": " if what else "") + error
        attempts = len(completion.attempts) if completion.attempts else 1
        self.fail(item_id, reason, kind, completion.http_status, completion.call_id, attempts, breaker=False)
        if completion.failure_kind == "permanent":
            if self.stopped is None:
                self.stopped = (item_id, reason, completion.failure_cause, completion.http_status)
            return
        if completion.error:
            self._trip(kind, completion.http_status, item_id, reason, error)

    def _trip(self, kind: str, status: int | None, item_id: str, reason: str, error: str) -> None:
        """The circuit breaker: failures of the same kind, status and error
        class in a row (any ok resets it); at ``failures.circuit_breaker`` of
        them the stage stops with :class:`StageStopped`."""
        head = re.match(r"\s*([\w.]+)", error)
        signature = (kind, status, head.group(1) if head else "")
        count = self._streak[1] + 1 if self._streak[0] == signature else 1
        self._streak = (signature, count)
        limit = self.engine.circuit_breaker
        if limit and count >= limit:
            self.flush()
            raise StageStopped(self.engine.breaker_message(self.step, count, item_id, reason, kind))

    def _maybe_flush(self) -> None:
        if len(self._outcomes) >= 64:
            self.flush()

    def flush(self) -> None:
        if not self._outcomes:
            return
        outcome_rows.save_outcomes(self.store, self._outcomes)
        self._outcomes = []

    # -- artifacts --------------------------------------------------------------

    def artifact_dir(self, label: str) -> Path:
        """A folder for this key's files (checkpoints, exports): never shared
        with another key, and owned by the store, not by this run:
        ``<db folder>/<db name>-stages/<label>-<key>`` (tapir/pipeline/stagedirs.py),
        so deleting the output_dir of the run that computed it breaks no
        other run that reuses the key."""
        from tapir.pipeline.stagedirs import stage_dir

        path = stage_dir(self.ctx.store.path, self.ctx.out_dir, f"{label}-{self.key[:12]}")
        path.mkdir(parents=True, exist_ok=True)
        return path


def error_kind(completion) -> str:
    """What an outcome's failure was: ``<kind>/<cause>`` for an API call that
    says (``permanent/quota``, ``transient/timeout``, ``content/malformed``,
    ...; see docs/pipeline.md), else a word read from the error text."""
    if completion.failure_kind:
        return f"{completion.failure_kind}/{completion.failure_cause or 'error'}"
    status = completion.http_status
    if status:
        return f"http_{status}"
    text = (completion.error or "").lower()
    for word, kind in (("timeout", "timeout"), ("timed out", "timeout"), ("connect", "connection"),
                       ("credential", "credentials"), ("api key", "credentials"), ("parse", "parse"),
                       ("empty", "empty")):
        if word in text:
            return kind
    return "error" if completion.error else "empty"
