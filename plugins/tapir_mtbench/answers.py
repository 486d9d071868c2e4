"""MT-Bench answer generation: two turns, FastChat's per-category
temperatures, turn two conditioned on the model's own turn-one answer.

Batch-first: every missing turn-one answer goes to the backend in one
``generate`` call, then every missing turn-two answer in a second. Answers
already stored for the run are not asked for again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tapir.models import load_cached
from tapir.roles import GenerationParams, GenerationRequest, Message

from tapir.store import records
from tapir_mtbench.data import DEFAULT_TEMPERATURE, Question, temperature_config

ROLE = "answer"


@dataclass
class AnswerSettings:
    max_new_tokens: int = 1024
    seed: int = 0
    system_prompt: str | None = None
    model_options: dict[str, Any] | None = None
    temperatures: dict[str, float] | None = None  # per-category overrides


def _params(question: Question, settings: AnswerSettings, table: dict[str, float]) -> GenerationParams:
    temperature = table.get(question.category, DEFAULT_TEMPERATURE)
    return GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=float(temperature), seed=settings.seed)


def _messages(settings: AnswerSettings, turns: list[tuple[str, str | None]]) -> list[Message]:
    messages: list[Message] = []
    if settings.system_prompt:
        messages.append({"role": "system", "content": settings.system_prompt})
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


def generate_answers(model: str, store, run_id: str, questions: list[Question],
                     settings: AnswerSettings) -> tuple[dict[tuple[str, int], tuple[int, str]], dict[str, Any]]:
    """Answers of ``model`` to both turns: ``{(item_id, turn): (response id,
    text)}``, plus counts (generated, reused, failures with their errors)."""
    table = {**temperature_config(), **(settings.temperatures or {})}
    stored = records.load_responses(store, run_id, ROLE, model)
    info: dict[str, Any] = {"reused": len(stored), "generated": 0, "failures": 0, "errors": []}
    backend = None
    for turn in (1, 2):
        todo = []
        for q in questions:
            if (q.item_id, turn) in stored:
                continue
            if turn == 2 and (q.item_id, 1) not in stored:
                continue  # turn one failed: nothing to condition on
            history = [(q.turns[0], stored[(q.item_id, 1)][1])] if turn == 2 else []
            todo.append((q, _messages(settings, [*history, (q.turns[turn - 1], None)])))
        if not todo:
            continue
        if backend is None:
            backend = load_cached(model, store, run_id, options=settings.model_options)
        requests = [GenerationRequest(messages, _params(q, settings, table)) for q, messages in todo]
        completions = backend.generate(requests)
        new = []
        for (q, _), completion in zip(todo, completions):
            if completion.error is not None:
                info["failures"] += 1
                info["errors"].append(f"{q.item_id} turn {turn}: {completion.error}")
                continue
            new.append((q.item_id, turn, completion.text, completion.call_id))
        records.save_responses(store, run_id, ROLE, model, new)
        info["generated"] += len(new)
        stored = records.load_responses(store, run_id, ROLE, model)
    info["temperatures"] = table
    return stored, info
