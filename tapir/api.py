"""The Python API's :func:`distill`; ``tapir.study(...)`` is
:func:`tapir.study.study`, ``tapir.compare(...)`` is
:func:`tapir.compare.gather.compare` and ``tapir.bench.run`` is
:func:`tapir.bench.run` (each in the module it belongs to).

They do what ``tapir distill``, ``tapir study``, ``tapir compare`` and ``tapir bench run`` do,
with the same checks and errors (:class:`tapir.errors.ConfigError` for a bad
config, before anything is written), and return data instead of printing
tables. See docs/python.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tapir.pipeline.runner import Outcome


@dataclass
class StageSummary:
    """One stage of a run: what the end-of-run table of ``tapir distill`` shows."""

    stage: str
    round: int
    key: str  # the stage key: the scope of the rows it wrote
    status: str  # done | failed | reused
    reused_from: str | None  # the run whose stage was reused
    ok: int
    failed: int
    calls: int  # LLM calls made by this run (0 when reused)
    tokens: int
    cost: float
    truncated: int  # answers cut at max_new_tokens
    seconds: float
    info: dict[str, Any] = field(default_factory=dict, repr=False)  # what the stage recorded (counts, paths...)


@dataclass
class DistillResult:
    """What :func:`distill` returns."""

    run_id: str
    name: str
    status: str  # done | done_with_failures
    db: Path  # the database the run is in
    output_dir: Path
    stages: list[StageSummary]
    checkpoints: dict[int, Path]  # round -> checkpoint folder (0: S0)
    dataset: Path | None  # the distilled dataset of the last round (JSONL)
    mfd_plot: Path | None
    outcome: "Outcome" = field(repr=False, compare=False)  # the engine's view: .ctx, .results, .key(), .info()

    @property
    def failed(self) -> int:
        """Items that ended failed in any stage (a re-run retries them)."""
        return sum(s.failed for s in self.stages)

    def stage(self, name: str, round: int = 0) -> StageSummary:
        """The summary of stage ``name`` in ``round``."""
        for s in self.stages:
            if s.stage == name and s.round == round:
                return s
        have = ", ".join(f"{s.stage}/{s.round}" for s in self.stages)
        raise KeyError(f"no stage {name!r} in round {round} in run {self.run_id} (stages: {have})")

    @property
    def final_checkpoint(self) -> Path | None:
        """The last round's checkpoint."""
        return self.checkpoints[max(self.checkpoints)] if self.checkpoints else None


def _summary(result) -> StageSummary:
    reused = result.status == "reused"
    return StageSummary(
        stage=result.step.stage, round=result.step.round, key=result.key, status=result.status,
        reused_from=result.reused_from, ok=result.ok, failed=result.failed,
        calls=0 if reused else result.calls, tokens=0 if reused else result.tokens,
        cost=0.0 if reused else result.cost, truncated=result.truncated, seconds=result.seconds,
        info=dict(result.info),
    )


def distill(config: str | os.PathLike | dict[str, Any], *, db: str | os.PathLike | None = None,
            overrides: list[str] | None = None, retry: bool | None = None, wait: bool = False) -> DistillResult:
    """Run the TAPIR pipeline of ``config``: a YAML path, or a dict with the
    same keys (relative paths in a dict are read from the working directory).

    ``db``: the database (default: the config's ``db``, ``TAPIR_DB``, then
    ``./tapir.db``). ``overrides``: ``["KEY=VALUE", ...]`` as ``--set``
    (``["mfd.delta=1.5", "curriculum.expand_per_round.0=5"]``). ``retry``:
    False keeps failed items failed (``--no-retry``). ``wait``: wait for
    another process writing this run instead of raising.

    Safe to call again: unchanged stages are reused, failed items retried, no
    LLM call paid twice. Raises :class:`tapir.errors.ConfigError` for a bad
    config (nothing written) and :class:`tapir.errors.TapirError` for a stage
    over its failure threshold."""
    from tapir.pipeline.runner import distill as run_distill
    from tapir.progress import quiet_libraries

    quiet_libraries()  # other libraries' bars, logs and FutureWarnings, unless TAPIR_VERBOSE=1
    source = dict(config) if isinstance(config, dict) else Path(config)
    outcome = run_distill(source, None if db is None else str(db), retry=retry, wait=wait,
                          overrides=list(overrides or []))
    stages = [_summary(r) for r in outcome.results]
    checkpoints = {s.round: Path(s.info["path"]) for s in stages if s.stage == "train" and s.info.get("path")}
    export = next((s.info for s in stages if s.stage == "export"), {})
    failed = sum(s.failed for s in stages)
    return DistillResult(
        run_id=outcome.run.id, name=outcome.ctx.config.name, status="done_with_failures" if failed else "done",
        db=Path(outcome.store.path).resolve(), output_dir=Path(outcome.out_dir), stages=stages,
        checkpoints=dict(sorted(checkpoints.items())),
        dataset=Path(export["jsonl"]) if export.get("jsonl") else None,
        mfd_plot=Path(export["mfd_plot"]) if export.get("mfd_plot") else None,
        outcome=outcome,
    )
