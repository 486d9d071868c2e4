"""train: S0 on every ingested item with a teacher answer; S_r from S_{r-1}
on the hard set (D_S plus the expansions of rounds 1..r, rewritten) weighted
against the easy remainder D minus D_S (Eq. 4). Checkpoints live in a folder
named after the stage key, so a training never resumes another key's
checkpoint; that folder is the database's (``<db folder>/<db name>-stages/``,
tapir/pipeline/stagedirs.py), so every run reusing the key shares it and no
run's output_dir owns it."""

from __future__ import annotations

from typing import Any

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.job import Job
from tapir.pipeline.stages.answers import teacher_answers_upto, with_answers
from tapir.pipeline.stages.resample import easy_seed, hard_seed
from tapir.pipeline.stages.rewrite import rewritten
from tapir.pipeline.taskmix import coverage, task_cover, task_draws, task_weights
from tapir.roles import Item, TrainExample
from tapir.store.checkpoints import save_checkpoint


def alpha_for(round: int, alpha: float, step: float) -> float:
    """alpha_r = alpha + (r - 1) * step (the config checks it stays in [0, 1])."""
    return min(1.0, max(0.0, alpha + (round - 1) * step))


def group_weights(n_hard: int, n_easy: int, alpha: float, scheme: str = "eq4") -> tuple[float, float]:
    """(weight of each hard example, weight of each easy one): Eq. 4 (``eq4``)
    gives ``alpha`` and ``1 - alpha``; ``share``: hard examples share ``alpha``
    of the total weight and weights average 1. With one group empty, the
    other gets weight 1."""
    if not n_hard or not n_easy:
        return 1.0, 1.0
    if scheme == "eq4":
        return alpha, 1.0 - alpha
    n = n_hard + n_easy
    return alpha * n / n_hard, (1.0 - alpha) * n / n_easy


def weighted_examples(hard: list[Item], easy: list[Item], alpha: float, scheme: str = "eq4") -> list[TrainExample]:
    """The round's training examples, hard first, weighted by
    :func:`group_weights`. Examples of weight 0 (alpha 1 or 0) are left out:
    they add nothing to the loss but would still take optimizer steps and
    count in the per-token divisor."""
    w_hard, w_easy = group_weights(len(hard), len(easy), alpha, scheme)
    shared: dict[int, list[dict[str, str]]] = {}  # an up-sampled item's examples share one messages list

    def messages(it: Item) -> list[dict[str, str]]:
        m = shared.get(id(it))
        if m is None:
            m = shared[id(it)] = it.messages
        return m

    return ([TrainExample(messages(it), it.output, w_hard) for it in hard if w_hard > 0]
            + [TrainExample(messages(it), it.output, w_easy) for it in easy if w_easy > 0])


def hard_weight_share(examples: list[TrainExample], n_hard: int) -> float:
    """The share of the total weight on the hard examples (the first ``n_hard``)."""
    total = sum(e.weight for e in examples) or 1.0
    return round(sum(e.weight for e in examples[:n_hard]) / total, 4)


def training_counts(rnd: int, hard, easy, alpha: float, weighting: str | None, examples) -> dict[str, Any]:
    """What a model card says of a training set (JSON values): the train
    stage records them, so the export stage need not build every round's set again."""
    from collections import Counter

    items = hard + easy
    mix = Counter(it.task_type for it in items if it.task_type)
    origins = Counter(it.meta.get("origin") or "seed" for it in items)
    # The hard examples lead ``examples`` unless their weight is 0 (then they were left out).
    w_hard, _ = group_weights(len(hard), len(easy), alpha, weighting or "eq4")
    return {
        "examples": len(examples),
        "hard": len(hard) if rnd else None,
        "easy": len(easy) if rnd else None,
        "alpha": None if rnd == 0 else alpha,
        "weighting": weighting,
        "hard_weight_share": hard_weight_share(examples, len(hard) if w_hard > 0 else 0) if rnd else None,
        "task_mix": dict(mix.most_common()),
        "unlabelled": len(items) - sum(mix.values()),
        "origins": dict(origins.most_common()),
    }


def hard_pool(job: Job, round: int) -> list[Item]:
    """D_P^(r): D_S plus the expansions of rounds 1..r, with the teacher's
    answers, in rewritten form where the rewrite stage wrote one."""
    answers = teacher_answers_upto(job, round)
    hard = hard_seed(job)
    for r in range(1, round + 1):
        hard += job.ctx.items(job.scope("expand", r)) if job.scope("expand", r) else []
    hard = with_answers(hard, answers)
    better = rewritten(job, round)
    return [better.get(it.id, it) for it in hard]


def sampled(items: list[Item], sampling: str, weights: dict[str, float], seed: int,
            limit: float | None = None) -> list[Item]:
    """A round's hard training pairs from D_P (curriculum.sampling): ``task``
    every pair at least once, up-sampled to Eq. 3's task mix; ``task-draw``
    one draw with replacement by task probability; ``natural`` every pair once."""
    if sampling == "task":
        return task_cover(items, weights, seed, limit)
    if sampling == "task-draw":
        return task_draws(items, weights, seed)
    return list(items)


def training_set(job: Job, round: int, pool: list[Item] | None = None) -> tuple[list[Item], list[Item], float]:
    """(hard items, easy items, alpha) of round ``round``; round 0: (all, [], 1).
    ``pool``: the round's :func:`hard_pool` when the caller has it already."""
    cfg = job.config
    if round == 0:
        answers = teacher_answers_upto(job, 0)
        return with_answers(job.ctx.items(job.scope("ingest")), answers), [], 1.0
    cur = cfg.curriculum
    hard = sampled(hard_pool(job, round) if pool is None else pool, cur.sampling, task_weights(cfg.resample.weights),
                   cfg.seed * 100 + round, cur.upsample_limit)
    easy = with_answers(easy_seed(job), teacher_answers_upto(job, 0))
    return hard, easy, alpha_for(round, cur.alpha, cur.alpha_step)


def trainer_for(job: Job):
    """The trainer of this round: the configured one, with ``max_steps`` set
    to ``curriculum.max_steps`` for rounds >= 1 when it is given."""
    if job.round == 0:
        return job.ctx.trainer
    steps = job.config.curriculum.max_steps
    if steps is None:
        return job.ctx.trainer
    from tapir.plugins import registry

    cfg = job.config.trainer
    return registry().get("trainers", cfg.name).create(
        options={**cfg.options, "max_steps": steps}, where="trainer.options with curriculum.max_steps")


class Train:
    name = "train"
    @staticmethod
    def reads(round: int) -> tuple[str, ...]:
        common = ("student.model", "trainer", "seed")
        if round == 0:
            return common  # S0: every item once, weight 1
        return (*common, "curriculum.alpha", "curriculum.alpha_step", "curriculum.weighting", "curriculum.sampling",
                "curriculum.upsample_limit", "curriculum.max_steps", "resample.weights",
                *(("curriculum.start_from",) if round == 1 else ()))

    @staticmethod
    def upstream(step):
        r = step.round
        if r == 0:
            return ("ingest", 0), ("teacher_answers", 0)
        return (("train", r - 1), ("ingest", 0), ("seed_cut", step.option("cut", 0)), ("classify", 0),
                *(("expand", i) for i in range(1, r + 1)), *(("teacher_answers", i) for i in range(r + 1)),
                *(("rewrite", i) for i in range(1, r + 1)))
    # 2: sampling "task" covers every pair (up-sampling); zero-weight examples left out
    version = "2"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        r = job.round
        # The pool is built once: its coverage is reported below (building it again made a second copy of
        # every pool item and read every teacher answer once more).
        pool = hard_pool(job, r) if r > 0 else None
        hard, easy, alpha = training_set(job, r, pool)
        if not hard:
            raise TapirError(f"round {r} has no training examples (hard set empty): every teacher answer "
                             f"or judgment failed? See `tapir runs show`")
        # S0 has one group (weight 1 under either scheme): it does not read curriculum.weighting.
        scheme = ctx.config.curriculum.weighting if r else "eq4"
        examples = weighted_examples(hard, easy, alpha, scheme)
        w_hard, w_easy = group_weights(len(hard), len(easy), alpha, scheme)
        n_hard, n_easy = (len(hard) if w_hard > 0 else 0), (len(easy) if w_easy > 0 else 0)
        if not examples:
            raise TapirError(f"round {r} has no training example of weight > 0 (alpha {alpha:.2f}, "
                             f"{len(hard)} hard, {len(easy)} easy)")
        from_base = r == 0 or (r == 1 and ctx.config.curriculum.start_from == "base")
        base = ctx.student_base() if from_base else job.upstream_info("train", r - 1)["path"]
        out = job.artifact_dir(f"train-r{r}")
        left_out = f", {len(easy) - n_easy} easy left out at weight 0" if n_easy < len(easy) else ""
        left_out += f", {len(hard) - n_hard} hard left out at weight 0" if n_hard < len(hard) else ""
        progress.say(f"   training S{r} on {len(examples)} examples ({n_hard} hard, {n_easy} easy, "
                     f"alpha {alpha:.2f}{left_out}) from {base}")
        ctx.close_backends()  # models loaded for earlier stages give their (GPU) memory to training
        metrics = trainer_for(job).train(base, examples, str(out))
        with ctx.store.transaction():
            save_checkpoint(ctx.store, job.key, r, str(out.resolve()), ctx.config.student.model,
                            ctx.config.trainer.name, metrics)
        # The trainer's "tokens" (tokens trained on) would be taken for the stage's LLM tokens: train_tokens.
        job.info.update({("train_tokens" if k == "tokens" else k): v for k, v in metrics.items()
                         if isinstance(v, (int, float, str))})
        share = hard_weight_share(examples, n_hard)
        n_examples = len(examples)
        # What the model card says of this set (the export stage reads it instead of building the set again).
        # S0 reads no weighting (one group: weight 1 under either scheme); its card names the run's.
        job.info["card_data"] = training_counts(r, hard, easy, alpha, scheme if r else None, examples)
        del examples  # the training examples are done with
        trained_hard = hard if n_hard else []
        mix: dict[str, int] = {}
        for it in trained_hard:
            mix[it.task_type or "Others"] = mix.get(it.task_type or "Others", 0) + 1
        job.info.update(path=str(out.resolve()), examples=n_examples, hard_examples=n_hard,
                        task_mix=dict(sorted(mix.items(), key=lambda kv: -kv[1])),
                        easy_examples=n_easy, zero_weight_left_out=(len(hard) - n_hard) + (len(easy) - n_easy),
                        alpha=alpha, hard_weight_share=share, pin=job.key)
        if r > 0:
            cfg = ctx.config
            job.info["sampling"] = cfg.curriculum.sampling
            job.info["coverage"] = coverage(pool, trained_hard, task_weights(cfg.resample.weights),
                                            {it.id for it in hard_seed(job)})
        # The model card describes the run (teacher, judge, benchmarks), not what this key trained:
        # the export stage writes every round's card, each run.
