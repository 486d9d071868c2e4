"""seed_cut: the hard seed set D_S from the MFD of S0 (MFD > delta, the top
fraction or a quantile), capped at ``curriculum.seed_size``; ties at the cut
value are broken by a seeded draw and MFD <= 0 is never hard unless
``mfd.allow_nonpositive`` (tapir/pipeline/mfd.py ``select_hard``). Items
without a judgment are neither hard nor easy. Selecting nothing is an error.
Its info says what the cut did (selected, at the cut value, excluded)."""

from __future__ import annotations

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.job import Job
from tapir.config.schema import MFDConfig
from tapir.pipeline.mfd import Cut, describe_cut, select_hard


class SeedCut:
    name = "seed_cut"
    reads = ("mfd.delta", "mfd.top_fraction", "mfd.quantile", "mfd.allow_nonpositive", "curriculum.seed_size",
             "curriculum.reselect_seed", "seed")

    @staticmethod
    def upstream(step):
        return (("judge", step.round),)
    version = "2"  # 2: ties at the cut broken by a seeded draw; MFD <= 0 never hard unless allowed
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        mfd = ctx.scores(job.scope("judge", job.round), "mfd")  # round r > 0: curriculum.reselect_seed
        cap = ctx.config.curriculum.seed_size
        if job.step.option("all"):
            cut = Cut(set(mfd), "all judged items (no seed cut)", float("-inf"), len(mfd))
            if cap is not None and len(mfd) > cap:
                cut = select_hard(mfd, MFDConfig(delta=float("-inf"), allow_nonpositive=True), ctx.config.seed, cap)
                cut.rule = f"all judged items (no seed cut), capped at seed_size {cap}"
        else:
            cut = select_hard(mfd, ctx.config.mfd, ctx.config.seed, cap)
        hard = cut.hard
        if not hard:
            raise TapirError(
                f"the seed cut ({describe_cut(cut.info())}) selected none of the {len(mfd)} judged items, so "
                f"there is nothing to train the curriculum on. Look at `tapir mfd CONFIG` and lower mfd.delta, "
                f"or use mfd.top_fraction / mfd.quantile")
        ctx.set_scores(job.key, [(i, "hard", 0, 1.0 if i in hard else 0.0) for i in mfd])
        for i in mfd:
            job.ok(i)
        job.info.update(cut.info())
        progress.say(f"   seed set D_S: {describe_cut(cut.info())}")
