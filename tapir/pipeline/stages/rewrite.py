"""rewrite: task-aware rewriting (Appendix C). The rewriter refines the
instruction, the teacher answers the refined instruction with the template
of its task type, and training keeps the *original* instruction with the
enhanced answer; both instructions are stored in ``rewrites``. Round 1
rewrites D_S and the round's new items, later rounds their new items.

A rewrite rejected on its content (a refinement too long, drifting or
reading as an answer; an answer too short or looping) is asked again on
re-run with a fresh draw: both calls with the next sample index
(tapir.pipeline.draws), up to failures.max_draws."""

from __future__ import annotations

from dataclasses import replace

from tapir import progress
from tapir.pipeline.context import params_of
from tapir.pipeline.job import Job
from tapir.pipeline.stages.answers import teacher_answers_upto, with_answers
from tapir.pipeline.stages.resample import hard_seed
from tapir.store.rewrites import add_rewrite


def rewrite_targets(job: Job, round: int):
    items = job.ctx.items(job.scope("expand", round)) if job.scope("expand", round) else []
    if round == 1:
        items = hard_seed(job) + items
    return with_answers(items, teacher_answers_upto(job, round))


class Rewrite:
    name = "rewrite"
    reads = ("rewriter", "teacher")

    @staticmethod
    def upstream(step):
        r = step.round
        return (("ingest", 0), ("seed_cut", step.option("cut", 0)), ("classify", 0),
                *(("expand", i) for i in range(1, r + 1)), *(("teacher_answers", i) for i in range(r + 1)))
    version = "2"  # 2: refinements that read as answers, loop or drift are failed (the original is kept)
    max_failure_rate = 0.1

    def run(self, job: Job) -> None:
        ctx = job.ctx
        items = rewrite_targets(job, job.round)
        todo_ids = set(job.todo(it.id for it in items))
        todo = [it for it in items if it.id in todo_ids]
        name = ctx.config.rewriter.name
        params = params_of(ctx.config.rewriter.model)
        teacher_params = params_of(ctx.config.teacher.model)
        from tapir.pipeline.draws import reproduces

        rewriter_model, teacher_model = ctx.config.rewriter.model, ctx.config.teacher.model
        # Greedy from a local model: another draw gives the same reply (the rewriter's
        # refinement, or in polish-answer mode its answer; the teacher's answer to a refinement).
        same_again = {
            "refinement": reproduces(rewriter_model.model if rewriter_model else None, params.temperature),
            "answer": (reproduces(teacher_model.model if teacher_model else None, teacher_params.temperature)
                       if answered_by(ctx.config.rewriter) == "teacher"
                       else reproduces(rewriter_model.model if rewriter_model else None, params.temperature)),
        }
        with progress.bar(f"rewriting (round {job.round})", len(todo)) as bar:

            def on_result(i: int, rw) -> None:
                bar.update()
                it = todo[i]
                call = rw.call_ids[-1] if rw.call_ids else None
                if rw.error and rw.rejected:
                    # Kind "rejected": a reply that came but failed a check (not a failed call:
                    # the circuit breaker does not count it).
                    job.fail(it.id, rw.error, "rejected", call_id=call, content=True,
                             reproduces=same_again.get(rw.rejected, False))
                    return
                if rw.error:
                    job.fail(it.id, rw.error, "rewrite", call_id=call)
                    return
                new = replace(it, id=f"{it.id}~rw{job.round}", output=rw.answer,
                              meta={**it.meta, "source_id": it.id, "refined_instruction": rw.instruction})
                ctx.add_items(job.key, [new], "rewritten", job.round)
                with ctx.store.transaction():
                    add_rewrite(ctx.store, job.key, it.id, new.id, name, job.round, it.instruction, rw.instruction)
                job.ok(it.id, call)

            ctx.rewriter.rewrite(todo, ctx.teacher, params, on_result=on_result, teacher_params=teacher_params,
                                 samples=[job.draw(it.id) for it in todo])
        job.info.update(items=len(items), asked=len(todo))


def answered_by(rewriter_config) -> str:
    """Whose model answers a rewritten item, ``"teacher"`` or ``"rewriter"``:
    the rewriter's ``answered_by`` capability with its validated options
    (tapir.roles.Answering), ``"teacher"`` for a rewriter without it."""
    from tapir.errors import TapirError
    from tapir.plugins import registry
    from tapir.roles import ANSWERED_BY

    component = registry().get("rewriters", rewriter_config.name)
    if "answered_by" not in component.capabilities:
        return "teacher"
    options = component.options_model().model_validate(rewriter_config.options)
    who = component.capability("answered_by")(options)
    if who not in ANSWERED_BY:
        raise TapirError(f"rewriter '{component.name}' ({component.plugin}) says its items are answered by "
                         f"{who!r}; answered_by must return one of {', '.join(ANSWERED_BY)}: fix the plugin")
    return who


def rewritten(job: Job, round: int) -> dict[str, object]:
    """Source item id -> its latest rewritten item over rounds 1..round."""
    out = {}
    for r in range(1, round + 1):
        for it in job.ctx.items(job.scope("rewrite", r)):
            out[it.meta["source_id"]] = it
    return out
