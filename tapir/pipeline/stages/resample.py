"""resample: the expansion seeds of round r, drawn from the hard pool
(D_S plus what earlier rounds expanded) by task weights; types with fewer
items than their share are over-sampled, the others under-sampled."""

from __future__ import annotations

from collections import Counter

from tapir.pipeline.job import Job
from tapir.pipeline.stages.classify import with_labels
from tapir.pipeline.taskmix import resample, task_weights
from tapir.roles import Item
from tapir.tasks import TASK_TYPES


def hard_seed(job: Job) -> list[Item]:
    """D_S: the seed items the seed cut marked hard, with their task types."""
    hard = job.ctx.scores(job.scope("seed_cut", job.step.option("cut", 0)), "hard")
    items = job.ctx.items(job.scope("ingest"))
    return with_labels(job, [it for it in items if hard.get(it.id) == 1.0])


def easy_seed(job: Job) -> list[Item]:
    """D minus D_S: judged items the cut left out (unjudged items are in neither)."""
    hard = job.ctx.scores(job.scope("seed_cut", job.step.option("cut", 0)), "hard")
    items = job.ctx.items(job.scope("ingest"))
    return with_labels(job, [it for it in items if hard.get(it.id) == 0.0])


def expanded_before(job: Job, round: int) -> list[Item]:
    out: list[Item] = []
    for r in range(1, round):
        out += job.ctx.items(job.scope("expand", r))
    return out


def pool_for(job: Job, round: int) -> list[Item]:
    return hard_seed(job) + expanded_before(job, round)


def draws_for(job: Job, round: int) -> list[Item]:
    """The ordered draws of round ``round`` (deterministic in the pool and seed)."""
    cfg = job.config
    target = cfg.curriculum.expand_per_round[round - 1]
    pool = pool_for(job, round)
    if job.scope("resample", round) is None:  # recipe without re-sampling: the natural mix, cycled
        members = sorted(pool, key=lambda it: it.id)
        return [members[i % len(members)] for i in range(target)] if members else []
    return resample(pool, target, task_weights(cfg.resample.weights), cfg.seed * 100 + round)


class Resample:
    name = "resample"
    reads = ("resample", "curriculum.expand_per_round", "seed")

    @staticmethod
    def upstream(step):
        return (("ingest", 0), ("seed_cut", step.option("cut", 0)), ("classify", 0),
                *(("expand", i) for i in range(1, step.round)))
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        pool = pool_for(job, job.round)
        draws = draws_for(job, job.round)
        weights = task_weights(job.config.resample.weights)
        per_item = Counter(it.id for it in draws)
        job.ctx.set_scores(job.key, [(it.id, "draws", job.round, float(per_item.get(it.id, 0))) for it in pool])
        drawn = Counter(it.task_type or "Others" for it in draws)
        available = Counter(it.task_type or "Others" for it in pool)
        job.info["per_task"] = {
            t: {
                "pool": available[t],
                "drawn": drawn[t],
                "share": round(drawn[t] / max(1, len(draws)), 4),
                "weight": round(weights.get(t, 0.0), 4),
                "sampling": "over" if drawn[t] > available[t] else ("under" if drawn[t] < available[t] else "all"),
            }
            for t in TASK_TYPES
            if available[t] or drawn[t]
        }
        job.info.update(draws=len(draws), pool=len(pool))
        for it in pool:
            job.ok(it.id)
