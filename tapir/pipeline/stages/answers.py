"""teacher_answers and student_answers: one answer per item, failures kept
as outcomes (retried on re-run), never as answers."""

from __future__ import annotations

from typing import Sequence

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.context import params_of
from tapir.pipeline.job import Job
from tapir.roles import Completion, GenerationParams, GenerationRequest, Item
from tapir.textchecks import repeats_itself


def items_to_answer(job: Job) -> list[Item]:
    """Round 0 answers the ingested items, round r the items expanded in r."""
    if job.round == 0:
        return job.ctx.items(job.scope("ingest"))
    return job.ctx.items(job.scope("expand", job.round))


class TeacherAnswers:
    name = "teacher_answers"
    reads = ("teacher", "data.use_dataset_answers", "truncation.teacher")

    @staticmethod
    def upstream(step):
        return (("ingest", 0),) if step.round == 0 else (("expand", step.round),)
    version = "1"
    max_failure_rate = 0.05

    def run(self, job: Job) -> None:
        ctx = job.ctx
        items = items_to_answer(job)
        todo_ids = set(job.todo(it.id for it in items))
        todo = [it for it in items if it.id in todo_ids]
        if ctx.config.data.use_dataset_answers and job.round == 0:
            for it in todo:
                if not it.output:
                    job.fail(it.id, "data.use_dataset_answers is on but the item has no answer", "data")
                    continue
                ctx.save_response(job.key, it.id, "teacher", "dataset", 0, Completion(text=it.output))
                job.ok(it.id)
            job.info.update(items=len(items), source="dataset")
            return
        model = ctx.config.teacher.model.model if ctx.config.teacher.model else "dataset"
        params = params_of(ctx.config.teacher.model)
        on_truncated = ctx.config.truncation.teacher
        truncated = 0
        looping: list[str] = []
        with progress.bar(f"teacher answers (round {job.round})", len(todo)) as bar:

            def on_result(i: int, completion: Completion) -> None:
                nonlocal truncated
                bar.update()
                it = todo[i]
                if completion.ok and completion.text.strip():
                    # -- truncation.teacher: answers cut at max_new_tokens --
                    if completion.finish_reason == "length":
                        truncated += 1
                        if on_truncated == "drop":
                            job.fail(it.id, f"answer cut at max_new_tokens ({params.max_new_tokens})", "truncated",
                                     call_id=completion.call_id)
                            return
                    if repeats_itself(completion.text):
                        looping.append(it.id)
                    ctx.save_response(job.key, it.id, "teacher", model, job.round, completion)
                    job.ok(it.id, completion.call_id)
                else:
                    job.fail_completion(it.id, completion, "teacher answer")

            ctx.teacher.answer(todo, params, on_result=on_result)
        job.info.update(items=len(items), asked=len(todo))
        if looping:  # kept, and said: a looping answer teaches the student to loop
            job.info["looping_answers"] = len(looping)
            job.info["looping_examples"] = looping[:5]
            progress.say(f"   warning: {len(looping)} of {len(todo)} teacher answers repeat themselves (a generation "
                         f"loop), e.g. item {looping[0]}: see `tapir logs --item {looping[0]}`; a stronger teacher, "
                         f"a repetition penalty or a lower max_new_tokens avoids them")
        if truncated:
            job.info["truncated_answers"] = truncated  # cached answers included (the summary counts new calls)
            job.info["on_truncated"] = on_truncated
            if on_truncated == "flag":
                progress.say(f"   warning: {truncated} of {len(todo)} teacher answers were cut at max_new_tokens "
                             f"({params.max_new_tokens}) and are kept: raise teacher.model.generation.max_new_tokens, "
                             f"or set truncation.teacher: drop")
            elif on_truncated == "drop":
                progress.say(f"   {truncated} of {len(todo)} teacher answers were cut at max_new_tokens "
                             f"({params.max_new_tokens}) and dropped (truncation.teacher: drop)")


def student_path(job: Job, round: int) -> str:
    info = job.upstream_info("train", round)
    path = info.get("path")
    if not path:
        raise TapirError(f"no checkpoint of round {round} to answer with")
    return path


class StudentAnswers:
    name = "student_answers"
    reads = ("student.generation", "student.serve", "student.options", "seed")

    @staticmethod
    def upstream(step):
        return ("ingest", 0), ("train", step.round)
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        from tapir.pipeline.serving import student_backend

        ctx = job.ctx
        items = ctx.items(job.scope("ingest"))
        path = student_path(job, job.round)
        todo_ids = set(job.todo(it.id for it in items))
        todo = [it for it in items if it.id in todo_ids]
        gen = ctx.config.student.generation
        # Sampled answers (temperature > 0) are seeded from the run's seed: one reproducible sample each.
        params = GenerationParams(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                                  seed=ctx.config.seed)
        requests = [GenerationRequest(it.messages, params, meta={"item_id": it.id})
                    for it in todo]
        with student_backend(ctx, path) as backend, progress.bar(f"student S{job.round} answers", len(todo)) as bar:

            def on_result(i: int, completion: Completion) -> None:
                bar.update()
                if completion.ok:
                    ctx.save_response(job.key, todo[i].id, "student", backend.model_id, job.round, completion)
                    job.ok(todo[i].id, completion.call_id)
                else:
                    job.fail_completion(todo[i].id, completion, "student answer")

            if requests:
                backend.generate(requests, on_result=on_result)
        job.info.update(items=len(items), asked=len(todo), backend=backend.model_id)


def teacher_answers_upto(job: Job, round: int) -> dict[str, dict]:
    """The teacher's answers of rounds 0..round, by item id."""
    out: dict[str, dict] = {}
    for r in range(round + 1):
        out.update(job.ctx.responses(job.scope("teacher_answers", r), "teacher"))
    return out


def with_answers(items: Sequence[Item], answers: dict[str, dict]) -> list[Item]:
    from dataclasses import replace

    return [replace(it, output=answers[it.id]["text"]) for it in items if it.id in answers]
