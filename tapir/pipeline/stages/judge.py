"""judge: score the teacher's and the student's answers; MFD =
score(teacher) - score(student). An item whose judgment failed (or, with
``mfd.one_order_failed: retry``, lost one of its two orders) stays unjudged:
neither hard nor easy until a re-run judges it. A reply without a usable
score is asked again on re-run with a fresh draw (tapir.pipeline.draws), up
to failures.max_draws."""

from __future__ import annotations

from tapir import progress
from tapir.judge_reads import judgment_provenance
from tapir.pipeline.job import Job
from tapir.pipeline.stages.answers import student_path
from tapir.roles import JudgeRequest
from tapir.store.judgments import save_stage_judgment

CHUNK = 64


class JudgeMFD:
    name = "judge"
    reads = ("judge", "mfd.one_order_failed", "student.options")  # student.options: judges that load the student

    @staticmethod
    def upstream(step):
        return ("ingest", 0), ("teacher_answers", 0), ("train", step.round), ("student_answers", step.round)
    version = "1"
    max_failure_rate = 0.05

    def run(self, job: Job) -> None:
        ctx = job.ctx
        needs_student = ctx.judge_needs_student()
        reads_answer = ctx.judge_reads_student_answer()
        judge = ctx.judge(student_path(job, job.round) if needs_student else None)
        cfg = ctx.config.judge
        judge_model = cfg.model.model if cfg.model else cfg.name
        items = ctx.items(job.scope("ingest"))
        teacher = ctx.responses(job.scope("teacher_answers", 0), "teacher")
        student = ctx.responses(job.scope("student_answers", job.round), "student") if reads_answer else {}
        todo_ids = set(job.todo(it.id for it in items))
        todo = []
        for it in items:
            if it.id not in todo_ids:
                continue
            if it.id not in teacher:
                continue  # no teacher answer (that item failed upstream): not judged, not counted
            if reads_answer and it.id not in student:
                continue
            todo.append(it)
        accept_one = ctx.config.mfd.one_order_failed == "accept"
        from tapir.pipeline.draws import reproduces

        # The judge's generation capability says how it samples with its options; one that does not
        # say is taken as greedy (tapir.roles.Sampling).
        from tapir.capabilities import generation

        params = generation("judges", cfg.name, cfg.options)
        temperature = params.temperature if params is not None else 0.0
        same_again = cfg.model is not None and reproduces(cfg.model.model, temperature)
        with progress.bar(f"judging MFD (S{job.round})", len(todo)) as bar:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                requests = [
                    JudgeRequest(question=it.prompt, answer_a=teacher[it.id]["text"],
                                 answer_b=student[it.id]["text"] if reads_answer else "", item_id=it.id,
                                 category=it.task_type, draw=job.draw(it.id))
                    for it in chunk
                ]
                judgments = judge.judge(requests)
                scores = []
                with ctx.store.transaction():
                    for it, j in zip(chunk, judgments):
                        # Scored, but one of the asked orders failed (pairwise).
                        partial = j.error is None and bool(j.details.get("order_errors"))
                        error = j.error
                        if error is None and (j.score_a is None or j.score_b is None):
                            error = "the judge gave no score"
                        if error is None and partial and not accept_one:
                            error = "one of the two orders failed: " + "; ".join(
                                f"{k}: {v}" for k, v in j.details["order_errors"].items())
                        save_stage_judgment(
                            ctx.store, job.key, it.id, cfg.name, judge_model, judge.kind, _position(j), job.round,
                            teacher[it.id]["id"], student[it.id]["id"] if reads_answer else None,
                            j.score_a, j.score_b, j.preference, j.raw, j.details, error, j.details.get("read_by"))
                        if error is None:
                            scores += [(it.id, "teacher_score", job.round, j.score_a),
                                       (it.id, "student_score", job.round, j.score_b),
                                       (it.id, "mfd", job.round, j.score_a - j.score_b)]
                            if "spread" in j.details:  # judge_repeats: the MFD's spread over the repeats
                                scores.append((it.id, "mfd_spread", job.round, j.details["spread"]["mfd"]))
                            job.ok(it.id)
                        else:
                            kind = "partial" if partial else ("parse" if j.raw else "error")
                            # A reply came but gave no usable score: a fresh draw may.
                            job.fail(it.id, error, kind, content=kind != "error", reproduces=same_again)
                ctx.set_scores(job.key, scores)
                bar.update(len(chunk))
        from tapir.pipeline.mfd import distribution

        job.info.update(judged=len(todo), **distribution(list(ctx.scores(job.key, "mfd").values())))
        job.info.update(judgment_provenance(ctx.store, job.key))


def _position(judgment) -> str:
    """'both' for a two-order judgment, else the order that answered (ab / ba)."""
    orders = list(judgment.details.get("orders", {}))
    return "both" if len(orders) == 2 else ("".join(orders) or "single")

