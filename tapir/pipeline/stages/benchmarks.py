"""benchmarks and benchmarks_base: the configured benchmarks
(``evaluation.benchmarks``) on each checkpoint S_r and on the base model,
as ``tapir bench run`` runs them: the same runs (one per benchmark, model and
options, resumable, its LLM calls cached) and the same rows in
``benchmark_results``, so ``tapir compare`` puts every S_r beside its base
and ``tapir report`` draws the scores per round (the paper's Fig. 3).

Each benchmark is one item of the stage: ok, or failed with the reason
(preflight problems, or more failed questions than its
``max_failure_rate``). The stage allows no failed benchmark, so the run stops
and says which; a re-run repeats only what the benchmark's run has not
finished."""

from __future__ import annotations

from typing import Any

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.job import Job


class Benchmarks:
    """Benchmarks of checkpoint S_r (``benchmarks``) or of the base model
    (``benchmarks_base``)."""

    name = "benchmarks"
    reads = ("evaluation.benchmarks", "curriculum.rounds")  # rounds: benchmarks with rounds: last

    @staticmethod
    def upstream(step):
        return (("train", step.round),)
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        from tapir.bench import BenchFailed, run_benchmark

        ctx = job.ctx
        if self.name == "benchmarks_base":
            # Stored under the student's id, as the held-out base row: compare
            # finds it as every checkpoint's base.
            model, label = ctx.config.student.model, "base"
        else:
            model, label = job.upstream_info("train", job.round)["path"], f"S{job.round}"
        refs = benchmarks_at(ctx.config, None if self.name == "benchmarks_base" else job.round)
        scores: dict[str, dict[str, Any]] = {}
        for ref in refs:
            if ref.name not in job.todo([ref.name]):
                continue
            progress.say(f"   {ref.name} on {label} ({model})")
            try:
                rows = run_benchmark(ctx.store, ref.name, model, ref.options, max_failure_rate=ref.max_failure_rate)
            except BenchFailed as exc:
                top = "; ".join(f"{count} x {reason}" for reason, count in exc.summary.top_reasons())
                job.fail(ref.name, str(exc).splitlines()[0] + (f" Most common: {top}" if top else ""), "benchmark")
                continue
            except TapirError as exc:  # preflight problems, unknown model or data
                job.fail(ref.name, " ".join(str(exc).split())[:500], "benchmark")
                continue
            scores[ref.name] = primary_scores(rows)
            job.ok(ref.name)
        job.info.update(label=label, model=model, scores=scores)


class BenchmarksBase(Benchmarks):
    name = "benchmarks_base"
    reads = ("evaluation.benchmarks", "student.model")

    @staticmethod
    def upstream(step):
        return ()


def benchmarks_at(config, round: int | None) -> list:
    """The configured benchmarks that run on S_round (``None``: on the base
    model, which every benchmark scores): ``rounds: last`` ones only on the
    final round's checkpoint."""
    return [b for b in config.evaluation.benchmarks
            if round is None or b.rounds == "all" or round == config.curriculum.rounds]


def primary_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``task/metric -> value`` of a run's primary rows (diagnostic rows left out)."""
    return {f"{r['task']}/{r['metric']}": r["value"] for r in rows
            if r.get("value") is not None and (r.get("meta") or {}).get("primary", True) is not False}
