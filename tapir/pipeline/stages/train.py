"""train: S0 on every ingested item with a teacher answer; S_r from S_{r-1}
on the hard set (D_S plus the expansions of rounds 1..r, rewritten) weighted
against the easy remainder D minus D_S (Eq. 4). Checkpoints live in a folder
named after the stage key, so a training never resumes another key's
checkpoint."""

from __future__ import annotations

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.engine import Job
from tapir.pipeline.stages.answers import teacher_answers_upto, with_answers
from tapir.pipeline.stages.resample import easy_seed, hard_seed
from tapir.pipeline.stages.rewrite import rewritten
from tapir.pipeline.taskmix import task_weights
from tapir.roles import Item, TrainExample
from tapir.store.db import dumps, utcnow


def alpha_for(round: int, alpha: float, step: float) -> float:
    """alpha_r = alpha + (r - 1) * step (the config checks it stays in [0, 1])."""
    return min(1.0, max(0.0, alpha + (round - 1) * step))


def weighted_examples(hard: list[Item], easy: list[Item], alpha: float, scheme: str = "eq4") -> list[TrainExample]:
    """Eq. 4: each hard example weighs ``alpha``, each easy one ``1 - alpha``
    (``eq4``). ``share``: hard examples share ``alpha`` of the total weight and
    weights average 1. With one group empty, the other gets weight 1."""
    if not hard or not easy:
        w_hard = w_easy = 1.0
    elif scheme == "eq4":
        w_hard, w_easy = alpha, 1.0 - alpha
    else:
        n = len(hard) + len(easy)
        w_hard, w_easy = alpha * n / len(hard), (1.0 - alpha) * n / len(easy)
    return ([TrainExample([{"role": "user", "content": it.prompt}], it.output, w_hard) for it in hard]
            + [TrainExample([{"role": "user", "content": it.prompt}], it.output, w_easy) for it in easy])


def training_set(job: Job, round: int) -> tuple[list[Item], list[Item], float]:
    """(hard items, easy items, alpha) of round ``round``; round 0: (all, [], 1)."""
    cfg = job.config
    answers = teacher_answers_upto(job, round)
    if round == 0:
        return with_answers(job.ctx.items(job.scope("ingest")), answers), [], 1.0
    hard = hard_seed(job)
    for r in range(1, round + 1):
        hard += job.ctx.items(job.scope("expand", r)) if job.scope("expand", r) else []
    hard = with_answers(hard, answers)
    better = rewritten(job, round)
    hard = [better.get(it.id, it) for it in hard]
    if cfg.curriculum.sampling == "task":
        hard = task_draws(hard, task_weights(cfg.resample.weights), cfg.seed * 100 + round)
    easy = with_answers(easy_seed(job), teacher_answers_upto(job, 0))
    return hard, easy, alpha_for(round, cfg.curriculum.alpha, cfg.curriculum.alpha_step)


def task_draws(items: list[Item], weights: dict[str, float], seed: int) -> list[Item]:
    """Eq. 3: ``len(items)`` pairs drawn with replacement, each with its task's
    probability shared evenly by the task's items (task types absent from
    ``items`` give their share to the others)."""
    import random

    if not items:
        return []
    counts: dict[str, int] = {}
    for it in items:
        counts[it.task_type or "Others"] = counts.get(it.task_type or "Others", 0) + 1
    p = [weights.get(it.task_type or "Others", 0.0) / counts[it.task_type or "Others"] for it in items]
    if sum(p) <= 0:
        return list(items)
    rng = random.Random(seed)
    ordered = sorted(range(len(items)), key=lambda i: items[i].id)
    return [items[i] for i in rng.choices(ordered, weights=[p[i] for i in ordered], k=len(items))]


class Train:
    name = "train"
    @staticmethod
    def reads(round: int) -> tuple[str, ...]:
        common = ("student.model", "trainer", "seed")
        if round == 0:
            return common  # S0: every item once, weight 1
        return (*common, "curriculum.alpha", "curriculum.alpha_step", "curriculum.weighting", "curriculum.sampling",
                "resample.weights", *(("curriculum.start_from",) if round == 1 else ()))

    @staticmethod
    def upstream(step):
        r = step.round
        if r == 0:
            return ("ingest", 0), ("teacher_answers", 0)
        return (("train", r - 1), ("ingest", 0), ("seed_cut", step.option("cut", 0)), ("classify", 0),
                *(("expand", i) for i in range(1, r + 1)), *(("teacher_answers", i) for i in range(r + 1)),
                *(("rewrite", i) for i in range(1, r + 1)))
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        r = job.round
        hard, easy, alpha = training_set(job, r)
        if not hard:
            raise TapirError(f"round {r} has no training examples (hard set empty): every teacher answer "
                             f"or judgment failed? See `tapir runs show`")
        # S0 has one group (weight 1 under either scheme): it does not read curriculum.weighting.
        examples = weighted_examples(hard, easy, alpha, ctx.config.curriculum.weighting if r else "eq4")
        from_base = r == 0 or (r == 1 and ctx.config.curriculum.start_from == "base")
        base = ctx.student_base() if from_base else job.upstream_info("train", r - 1)["path"]
        out = job.artifact_dir(f"train-r{r}")
        progress.say(f"   training S{r} on {len(examples)} examples ({len(hard)} hard, {len(easy)} easy, "
                     f"alpha {alpha:.2f}) from {base}")
        metrics = ctx.trainer.train(base, examples, str(out))
        with ctx.store.db.conn:
            ctx.store["checkpoints"].insert(
                {"run_id": job.key, "round": r, "path": str(out.resolve()), "base_model": ctx.config.student.model,
                 "trainer": ctx.config.trainer.name, "metrics": dumps(metrics), "created_at": utcnow()},
                replace=True)
        job.info.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
        hard_w = sum(e.weight for e in examples[: len(hard)])
        total_w = sum(e.weight for e in examples) or 1.0
        mix: dict[str, int] = {}
        for it in hard:
            mix[it.task_type or "Others"] = mix.get(it.task_type or "Others", 0) + 1
        job.info.update(path=str(out.resolve()), examples=len(examples), hard_examples=len(hard),
                        task_mix=dict(sorted(mix.items(), key=lambda kv: -kv[1])),
                        easy_examples=len(easy), alpha=alpha, hard_weight_share=round(hard_w / total_w, 4),
                        pin=job.key)
        # The model card describes the run (teacher, judge, benchmarks), not what this key trained:
        # the export stage writes every round's card, each run.
