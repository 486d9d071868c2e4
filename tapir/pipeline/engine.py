"""Running a recipe: stage keys, reuse, item outcomes, retries, failure
thresholds and the run lock.

A *node* of a recipe is one stage at one round with its upstream nodes. Its
**key** is a hash of exactly what it reads: the stage's name, round and code
version, the config fields it declares (``reads``), and the key and output
fingerprint of every upstream node it declares (``upstream``). What it
declares is also all it can read: while it runs, its config is a view that
refuses any other field, and :meth:`Job.scope` refuses any other node
(:mod:`tapir.pipeline.reads`). Every row a stage writes carries its key (in the
``scope`` column of the data tables), and every file
it writes lives in a folder named after it, so

* a node whose key is done (in this run or any other run on the database)
  is reused, never recomputed, and nothing ever reads another key's output;
* editing a config field recomputes exactly the nodes that read it and those
  downstream of them.

Every item a stage handles ends ``ok`` or ``failed`` with its reason in
``outcomes``. A re-run retries the failed items (``retry=False`` keeps them):
a failed call is asked again as it was; a reply that failed on its content
(malformed, rejected by a check) is asked again with a *fresh draw* (the
stage asks :meth:`Job.draw` for the sample index), up to ``max_draws`` draws,
unless the same inputs reproduce it (greedy decoding from a local model):
such items stay failed and say which option changes them;
a stage whose failed share exceeds its ``max_failure_rate`` ends the run with
:class:`StageFailed` (exit code 1) naming the stage, the count and the most
common reasons.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any, Callable, Sequence

from tapir import heap, progress
from tapir.errors import PermanentFailure, TapirError
from tapir.pipeline.counts import handled
from tapir.pipeline.job import Job, Stage, reads_of
from tapir.pipeline.reads import UndeclaredRead, config_value
from tapir.pipeline.steps import Node, StageFailed, StageResult, StageStopped, Step, Upstream
from tapir.store import outcomes as outcome_rows
from tapir.store.calls import maybe_billed_attempts, stage_call_totals
from tapir.store.db import dumps, utcnow
from tapir.store.stages import done_stage, last_finished

# The engine's module is where plugins find what a stage is made of (docs/core.md): the names
# below live in tapir.pipeline.steps and tapir.pipeline.job.
__all__ = ["Engine", "Job", "Node", "Stage", "StageFailed", "StageResult", "StageStopped", "Step", "Upstream",
           "UndeclaredRead", "config_value", "reads_of"]


class Engine:
    """Runs the steps of a recipe in order for one run of one config."""

    def __init__(self, ctx, steps: Sequence[Step], stages: dict[str, Stage], *, retry: bool = True,
                 max_failure_rate: dict[str, float] | None = None, circuit_breaker: int = 5,
                 max_draws: int = 3):
        self.ctx = ctx
        self.max_draws = max_draws  # draws an item whose reply fails on its content gets in all
        self._has_draws: bool | None = None
        self.circuit_breaker = circuit_breaker  # failures of one kind in a row that stop a stage (0: never)
        self.steps = list(steps)
        self.stages = stages
        self.retry = retry
        self.thresholds = dict(max_failure_rate or {})
        self.results: dict[Node, StageResult] = {}
        self._keys: dict[Node, str] = {}
        # A key's latest done row (parsed), read once per run for the fingerprints downstream keys
        # hash (a node upstream of many is parsed once, not once per downstream key). run_step
        # reads the store again (another run may have finished the key) and drops the row when
        # it starts writing the key.
        self._done_rows: dict[str, dict | None] = {}
        self.by_node = {s.node: s for s in self.steps}

    # -- keys -------------------------------------------------------------------

    def key_of(self, node: Node) -> str | None:
        if node not in self.by_node:
            return None
        if node not in self._keys:
            self._keys[node] = self.compute_key(self.by_node[node])
        return self._keys[node]

    def compute_key(self, step: Step) -> str:
        stage = self.stages[step.stage]
        upstream = []
        for node in step.after:
            key = self.key_of(node)
            if key is None:
                continue
            upstream.append([node[0], node[1], key, self.fingerprint(node)])
        payload = {
            "stage": step.stage,
            "round": step.round,
            "version": stage.version,
            "reads": {path: config_value(self.ctx.config, path) for path in reads_of(stage, step.round)},
            "options": [list(o) for o in step.options],
            "after": upstream,
        }
        return hashlib.sha256(dumps(payload).encode()).hexdigest()[:24]

    def fingerprint(self, node: Node) -> str:
        """What a node produced, as far as downstream keys are concerned:
        the ids of its ok items plus any figure the stage pins. Unknown
        (not run yet) is 'pending'."""
        result = self.results.get(node)
        if result is None:
            row = self._done_row(self.key_of(node))
            return row["fingerprint"] if row else "pending"
        return result.fingerprint or "pending"

    # -- the store's view of keys ------------------------------------------------

    def _done_row(self, key: str | None, fresh: bool = False) -> dict | None:
        """The latest done stage row of ``key`` (run id, parsed info, seconds,
        fingerprint), or None; kept for the run unless ``fresh``."""
        if key is None:
            return None
        if fresh or key not in self._done_rows:
            self._done_rows[key] = self._read_done_row(key)
        return self._done_rows[key]

    def _read_done_row(self, key: str) -> dict | None:
        row = done_stage(self.ctx.store, key)
        if row is None:
            return None
        return {**row, "fingerprint": row["info"].get("_fingerprint", "")}

    @property
    def has_draws(self) -> bool:
        """Whether the database has outcomes.draws (m008; the dry run may read an older one)."""
        if self._has_draws is None:
            self._has_draws = outcome_rows.has_draws_column(self.ctx.store)
        return self._has_draws

    def _retry_limit(self) -> int | None:
        """The draws after which a failed outcome is not asked again (see
        Job.retries); None: every failed one is (a database without draws)."""
        return int(self.max_draws) if self.has_draws else None

    def failed_count(self, key: str) -> int:
        """Failed items of ``key`` that a re-run asks again."""
        return outcome_rows.count_retried(self.ctx.store, key, self._retry_limit())

    def handled_count(self, key: str) -> int:
        """Items of ``key`` with an outcome already (ok or failed)."""
        return outcome_rows.count_handled(self.ctx.store, key)

    def resumed_calls(self, key: str, planned: int) -> int:
        """Of ``planned`` items a node handles, how many a run that resumes it asks:
        the failed ones a re-run retries, plus, for a node stopped part-way,
        those without an outcome yet (``planned`` is an estimate)."""
        retried = len(self.retried_items(key)) if self.retry else 0
        row = last_finished(self.ctx.store, key)
        if row and (row[0] == "done" or row[1].get("ran_to_end")):
            return retried
        return retried + max(0, planned - self.handled_count(key))

    def retried_items(self, key: str) -> list[str]:
        """The failed items of ``key`` a re-run asks again (the dry run counts their calls)."""
        return outcome_rows.retried_items(self.ctx.store, key, self._retry_limit())

    def draw_note(self, draws: int, reproduces: bool) -> str:
        """What a re-run does with an item whose ``draws``-th draw failed on its content."""
        if reproduces:
            return (" [the same inputs reproduce this reply (greedy decoding at temperature 0 from a local model), "
                    "so a re-run does not ask again: set the role's model.generation.temperature above 0 for "
                    "fresh draws, or raise failures.max_failure_rate for the stage]")
        if draws >= self.max_draws:
            return (f" [draw {draws} of {self.max_draws}: draws used up, a re-run does not ask again; raise "
                    f"failures.max_draws for more]")
        return f" [draw {draws} of {self.max_draws}: a re-run asks again with a fresh draw]"

    # -- running ----------------------------------------------------------------

    def plan(self) -> list[tuple[Step, str, str]]:
        """(step, key, what would happen: reuse | retry failures | run | depends)."""
        out = []
        for step in self.steps:
            key = self.key_of(step.node)
            row = self._done_row(key)
            pending_up = any(self.fingerprint(n) == "pending" for n in step.after if n in self.by_node)
            if row and not (self.retry and self.failed_count(key)):
                out.append((step, key, "reuse"))
            elif row or self.handled_count(key):
                # Done with failures, or stopped / interrupted part-way: the run asks only the
                # items not ok yet (failed ones: those a re-run retries).
                out.append((step, key, "retry failures"))
            elif pending_up:
                out.append((step, key, "run (after upstream)"))
            else:
                out.append((step, key, "run"))
        return out

    def run(self, on_step: Callable[[StageResult], None] | None = None) -> list[StageResult]:
        for step in self.steps:
            result = self.run_step(step)
            if on_step:
                on_step(result)
        return [self.results[s.node] for s in self.steps]

    def run_step(self, step: Step) -> StageResult:
        from tapir.locks import Lock

        key = self.key_of(step.node)
        stage = self.stages[step.stage]
        result = StageResult(step, key)
        self.results[step.node] = result
        run = self.ctx.run
        row = self._done_row(key, fresh=True)
        if row and not (self.retry and self.failed_count(key)):
            self._reuse(step, result, row)
            return result
        with Lock(self.ctx.store, f"stage:{key}"):  # another run may be computing the same key
            row = self._done_row(key, fresh=True)
            if row and not (self.retry and self.failed_count(key)):
                self._reuse(step, result, row)
                return result
            job = Job(self, step, key, self.retry)
            self._done_rows.pop(key, None)  # this run writes the key's stage row from here on
            self.ctx.tag_calls(stage_key=key, round=step.round)
            started_at = utcnow()
            started = time.perf_counter()
            run.mark_stage(step.stage, step.round, key, "running")
            progress.say(f"-> {step.label}")
            try:
                try:
                    stage.run(job)
                    heap.trim()  # what the stage freed goes back to the OS: the next stages start lower
                    if job.redrawn:
                        progress.say(f"   {step.label}: {len(job.redrawn)} item(s) retried with a fresh draw ("
                                     + ", ".join(f"{n} x draw {d + 1} of {self.max_draws}" for d, n in
                                                 sorted(Counter(job.redrawn.values()).items())) + ")")
                except PermanentFailure as exc:
                    job.stopped = job.stopped or (None, exc.error, exc.cause, exc.status)
                if job.stopped is not None:
                    raise StageStopped(self.permanent_message(step, *job.stopped))
                job.flush()
            except BaseException as exc:
                job.flush()
                result.seconds = time.perf_counter() - started
                self._count(result, started_at)
                result.status = "failed"
                result.info = {**job.info, **self.counts(result), "error": _reason(exc)}
                run.mark_stage(step.stage, step.round, key, "failed", result.info, result.seconds)
                raise
            result.seconds = time.perf_counter() - started
            result.info = job.info
            self._count(result, started_at)
            result.fingerprint = self._fingerprint(key, job.info)
            info = {**job.info, "_fingerprint": result.fingerprint, **self.counts(result)}
            threshold = self.thresholds.get(step.stage, stage.max_failure_rate)
            total = result.ok + result.failed
            if result.failed and total and result.failed / total > threshold:
                result.status = "failed"
                message = self.failure_message(step, key, result, threshold)
                info["error"] = message
                info["ran_to_end"] = True  # every item has its outcome (the dry run counts only the retried)
                run.mark_stage(step.stage, step.round, key, "failed", info, result.seconds)
                raise StageFailed(message)
            result.status = "done"
            run.mark_stage(step.stage, step.round, key, "done", info, result.seconds)
            progress.say(f"   {step.label}: {handled(step.stage, result.ok, result.failed, job.info)} ok"
                         + (f", {result.failed} failed" if result.failed else "")
                         + f", {result.seconds:.1f}s")
            return result

    def _reuse(self, step: Step, result: StageResult, row: dict) -> None:
        info = row["info"]
        result.status = "reused"
        result.reused_from = row["run_id"]
        result.info = info
        result.fingerprint = row["fingerprint"]
        result.ok = info.get("ok", 0)
        result.failed = info.get("failed", 0)
        result.final = result.failed - self.failed_count(result.key) if result.failed else 0
        self.ctx.run.mark_stage(step.stage, step.round, result.key, "done", info, 0.0,
                                reused_from=row["run_id"])
        progress.say(f"-> {step.label}: reused (same inputs as run {row['run_id']})")

    def _fingerprint(self, key: str, info: dict) -> str:
        ids = outcome_rows.ok_items(self.ctx.store, key)
        payload = dumps([ids, info.get("pin")])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _count(self, result: StageResult, since: str) -> None:
        store = self.ctx.store
        result.ok, result.failed, result.final = outcome_rows.status_counts(store, result.key, self._retry_limit())
        calls, tokens, cost, truncated, attempts = stage_call_totals(store, result.key, since)
        result.calls, result.tokens, result.cost, result.truncated = calls, tokens, round(cost, 6), truncated
        result.attempts = attempts
        result.maybe_billed = maybe_billed_attempts(store, result.key, since)

    @staticmethod
    def counts(result: StageResult) -> dict[str, Any]:
        """The figures a stage row's info keeps (the summary and `tapir runs show` print them)."""
        return {"ok": result.ok, "failed": result.failed, "final": result.final, "calls": result.calls,
                "tokens": result.tokens,
                "cost": result.cost, "truncated": result.truncated, "attempts": result.attempts,
                "maybe_billed": result.maybe_billed}

    def failure_message(self, step: Step, key: str, result: StageResult, threshold: float) -> str:
        rows = outcome_rows.failures(self.ctx.store, key)
        kinds = Counter(kind or "error" for _, _, kind in rows)
        examples = {}
        for item_id, reason, kind in rows:
            examples.setdefault(kind or "error", (item_id, reason))
        total = result.ok + result.failed
        lines = [f"stage {step.label} failed: {result.failed} of {total} items failed "
                 f"({result.failed / total:.0%}, above max_failure_rate {threshold:.0%})."]
        for kind, count in kinds.most_common(3):
            item_id, reason = examples[kind]
            lines.append(f"  {count} x {kind}, e.g. item {item_id}: {reason}")
        if result.final:
            lines.append(f"{result.final} of the failed items will fail the same way on a re-run (the same inputs "
                         f"reproduce them, or their {self.max_draws} draws are used up: see [...] above); the "
                         f"option named there changes that.")
        if result.failed > result.final:
            lines.append("Fix the cause, then re-run the same command: only the failed items are retried "
                         "(nothing already paid for is sent again; a reply that failed on its content is asked "
                         "again with a fresh draw).")
        return "\n".join(lines)


    def permanent_message(self, step: Step, item_id: str | None, reason: str, cause: str | None,
                          status: int | None) -> str:
        """Why a stage stopped at a permanent failure, and the fix."""
        from tapir.errors import permanent_cause
        from tapir.runs import redact_text

        what, fix = permanent_cause(cause)
        code = f", HTTP {status}" if status else ""
        return "\n".join([
            f"stage {step.label} stopped: {what} ({cause or 'permanent'}{code}). No retry fixes this, so "
            f"nothing more was sent.",
            f"  {'item ' + item_id + ': ' if item_id else ''}{redact_text(reason)[:600]}",
            f"Fix: {fix}.",
            "Then run the same command again: the answers already received are kept and not paid for again."])

    def breaker_message(self, step: Step, count: int, item_id: str, reason: str, kind: str) -> str:
        """Why the circuit breaker stopped a stage."""
        from tapir.runs import redact_text

        return "\n".join([
            f"stage {step.label} stopped: {count} calls in a row failed the same way ({kind}), so the rest "
            f"would likely fail too (failures.circuit_breaker: {self.circuit_breaker}).",
            f"  e.g. item {item_id}: {redact_text(reason)[:600]}",
            "Fix the cause (is the server up and the model served? see the error above), then run the same "
            "command again: only the items not answered yet are sent."])


def _reason(exc: BaseException) -> str:
    from tapir.runs import redact_text

    if isinstance(exc, TapirError):
        return redact_text(str(exc))
    return redact_text(f"{type(exc).__name__}: {exc}")
