"""seed_cut: the hard seed set D_S from the MFD of S0 (MFD > delta, the top
fraction or a quantile), capped at ``curriculum.seed_size``. Items without a
judgment are neither hard nor easy. Selecting nothing is an error."""

from __future__ import annotations

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.engine import Job
from tapir.pipeline.mfd import select_hard


class SeedCut:
    name = "seed_cut"
    reads = ("mfd.delta", "mfd.top_fraction", "mfd.quantile", "curriculum.seed_size")

    @staticmethod
    def upstream(step):
        return (("judge", step.round),)
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        mfd = ctx.scores(job.scope("judge", job.round), "mfd")  # round r > 0: curriculum.reselect_seed
        if job.step.option("all"):
            hard, threshold, rule = set(mfd), float("-inf"), "all judged items (no seed cut)"
        else:
            hard, threshold, rule = select_hard(mfd, ctx.config.mfd)
        cap = ctx.config.curriculum.seed_size
        if cap is not None and len(hard) > cap:
            hard = set(sorted(hard, key=lambda i: (-mfd[i], i))[:cap])
            rule += f", capped at seed_size {cap}"
        if not hard:
            raise TapirError(
                f"the seed cut ({rule}) selected none of the {len(mfd)} judged items, so there is nothing to "
                f"train the curriculum on. Look at `tapir mfd CONFIG` and lower mfd.delta, or use "
                f"mfd.top_fraction / mfd.quantile")
        ctx.set_scores(job.key, [(i, "hard", 0, 1.0 if i in hard else 0.0) for i in mfd])
        for i in mfd:
            job.ok(i)
        job.info.update(rule=rule, threshold=threshold, hard=len(hard), easy=len(mfd) - len(hard))
        progress.say(f"   seed set D_S: {len(hard)} of {len(mfd)} judged items ({rule})")
