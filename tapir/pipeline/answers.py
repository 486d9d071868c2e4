"""Answering items with the teacher or a student, skipping answered ones."""

from __future__ import annotations

from typing import Sequence

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.context import Context
from tapir.roles import Completion, GenerationParams, GenerationRequest, Item


def teacher_answers(ctx: Context, items: Sequence[Item], round: int, info: dict) -> None:
    """The teacher answers every item without a teacher response (or the
    dataset's answers are kept when ``data.use_dataset_answers``)."""
    model = ctx.config.teacher.model.model if ctx.config.teacher.model else "dataset"
    done = ctx.responses("teacher", round)
    todo = [it for it in items if it.id not in done]
    if ctx.config.data.use_dataset_answers:
        missing = [it.id for it in todo if not it.output]
        if missing:
            raise TapirError(
                f"data.use_dataset_answers is on but {len(missing)} item(s) have no answer "
                f"(first: {missing[0]}); add an output field or turn the option off"
            )
        for it in todo:
            ctx.save_response(it.id, "teacher", "dataset", round, Completion(text=it.output))
        info.update(answered=len(todo), source="dataset")
        return
    failed = []
    with progress.bar(f"teacher answers (round {round})", len(todo)) as bar:

        def on_result(i: int, completion: Completion) -> None:
            bar.update()
            if completion.ok and completion.text.strip():
                ctx.save_response(todo[i].id, "teacher", model, round, completion)
            else:
                failed.append(todo[i].id)

        ctx.teacher.answer(todo, on_result=on_result)
    info.update(answered=len(todo) - len(failed), failed=len(failed), already=len(done))


def student_answers(ctx: Context, items: Sequence[Item], student_path: str, round: int, info: dict) -> None:
    """Student S_round answers every item (greedy), stored as role 'student'."""
    backend = ctx.backend(f"hf:{student_path}", ctx.config.student.options)
    done = ctx.responses("student", round)
    todo = [it for it in items if it.id not in done]
    gen = ctx.config.student.generation
    params = GenerationParams(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature)
    requests = [GenerationRequest([{"role": "user", "content": it.prompt}], params) for it in todo]
    failed = []
    with progress.bar(f"student answers (round {round})", len(todo)) as bar:

        def on_result(i: int, completion: Completion) -> None:
            bar.update()
            if completion.ok:
                ctx.save_response(todo[i].id, "student", backend.model_id, round, completion)
            else:
                failed.append(todo[i].id)

        backend.generate(requests, on_result=on_result)
    info.update(answered=len(todo) - len(failed), failed=len(failed), already=len(done))
