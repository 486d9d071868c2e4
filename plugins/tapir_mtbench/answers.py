"""MT-Bench answer generation, as FastChat 0.2.36 generates answers.

What FastChat's ``gen_model_answer`` does, and tapir with it:

* the prompt is FastChat's conversation template for the model
  (``fastchat.model.get_conversation_template(<model name>)``: an adapter
  matched on the name, FastChat's ``one_shot`` template for a name no
  adapter knows), built with FastChat's own ``Conversation`` object; the
  option ``conv_template`` names another FastChat template, or
  ``chat_template`` sends plain chat messages (the tokenizer's chat
  template on a local model: tapir's choice, not FastChat's). Departure:
  with ``conv_template=auto`` (the default) a local checkpoint that carries
  a chat template, and whose name no FastChat adapter knows (FastChat would
  fall back to ``one_shot``), gets its chat template, the format it was
  trained in (:func:`resolve_format`, :mod:`tapir.benchmodel`);
* the temperature of the question's category (``temperature_config``,
  0.7 for a category without one), greedy below 1e-4; 1024 new tokens;
* every answer ``.strip()``-ped, and turn two built on the stripped
  turn-one answer;
* on a local transformers model (the ``hf`` backend, or any backend with a
  ``model_and_tokenizer()`` method) the generation itself is FastChat's:
  one question at a time, ``torch.manual_seed(seed)`` (FastChat: the choice
  index, 0) before the question's first turn, both turns drawn from that
  one random stream, ``model.generate(ids, do_sample=..., temperature=...,
  max_new_tokens=...)`` so the model's ``generation_config`` supplies every
  other sampling setting (top_k, top_p, repetition penalty, eos), then
  FastChat's cut at the template's stop tokens and stop string and its
  removal of special tokens;
* any other backend (an API, vLLM, a server) gets the template as
  messages (``conv.to_openai_api_messages()``, as ``gen_api_answer``
  sends them), batch-first: every missing turn-one answer in one
  ``generate`` call, then every missing turn-two answer.

Departures, on purpose: a generation error is a failure (retried on the
next run) where FastChat stores the text ``ERROR`` and goes on; answers are
stripped on every backend (``gen_api_answer`` does not strip).

Answers already stored for the run are not asked for again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from tapir.benchmodel import PromptFormat, chat_format, prefers_chat_template
from tapir.errors import TapirError
from tapir.models import load_cached
from tapir.progress import bar
from tapir.roles import GenerationParams, GenerationRequest, Message

from tapir.store import records
from tapir_mtbench.data import DEFAULT_TEMPERATURE, Question, temperature_config

# Answers generated the FastChat way (stripped, turn two on the stripped
# turn one). Earlier versions stored unstripped answers under "answer";
# those are not reused.
ROLE = "mtbench-answer"
CHAT_TEMPLATE = "chat_template"
GREEDY_BELOW = 1e-4  # FastChat: temperature < 1e-4 means do_sample=False


@dataclass
class AnswerSettings:
    max_new_tokens: int = 1024
    seed: int = 0
    conv_template: str = "auto"  # "auto" (FastChat's for the model name), a FastChat template name, "chat_template"
    system_prompt: str | None = None
    model_options: dict[str, Any] | None = None
    temperatures: dict[str, float] | None = None  # per-category overrides
    refresh: bool = False  # bypass the LLM-call cache (a forced run)


def conversation_name(model: str) -> str:
    """The name FastChat's adapters are matched on: the model id without a
    ``BACKEND:`` prefix (``hf:/runs/llama-2-student`` -> the path)."""
    prefix, sep, rest = model.partition(":")
    if sep and rest and "/" not in prefix:
        return rest
    return model


def check_conv_template(name: str) -> None:
    if name in ("auto", CHAT_TEMPLATE):
        return
    from fastchat.conversation import conv_templates

    if name not in conv_templates:
        close = ", ".join(sorted(conv_templates)[:60])
        raise TapirError(f"mtbench: conv_template {name!r} is no FastChat conversation template "
                         f"(use auto, chat_template or one of: {close}, ...)")


def new_conversation(model: str, settings: AnswerSettings):
    """A fresh FastChat ``Conversation`` for ``model``."""
    if settings.conv_template == "auto":
        from fastchat.model.model_adapter import get_conversation_template

        conv = get_conversation_template(conversation_name(model))
    else:
        from fastchat.conversation import get_conv_template

        conv = get_conv_template(settings.conv_template)
    if settings.system_prompt is not None:
        conv.set_system_message(settings.system_prompt)
    return conv


def template_name(model: str, settings: AnswerSettings) -> str:
    if settings.conv_template == CHAT_TEMPLATE:
        return CHAT_TEMPLATE
    return new_conversation(model, settings).name


def fastchat_knows(model: str) -> bool:
    """True when a FastChat adapter matches the model's name, False when
    FastChat would fall back to its generic ``one_shot`` template."""
    from fastchat.model.model_adapter import BaseModelAdapter, get_model_adapter

    return type(get_model_adapter(conversation_name(model))) is not BaseModelAdapter


# A fixed exchange rendered to fingerprint a FastChat template (system message, roles, separators).
_PROBE = (("PROBE-Q1", "PROBE-A1"), ("PROBE-Q2", None))


def resolve_format(model: str, conv_template: str, system_prompt: str | None = None) -> tuple[str, PromptFormat]:
    """The template ``model``'s answers are generated with: ``(setting,
    format)`` where ``setting`` is ``chat_template`` or the FastChat
    setting as given (``auto``: FastChat's own ``get_conversation_template``
    at generation, as FastChat does), and ``format`` the template's name and
    digest for the rows. ``auto``: FastChat's adapter template when one matches the model's
    name; else the checkpoint's chat template when it carries one (the
    format it was trained in); else FastChat's fallback (``one_shot``)."""
    if conv_template == CHAT_TEMPLATE or (
            conv_template == "auto" and prefers_chat_template(model, has_named_template=fastchat_knows(model))):
        return CHAT_TEMPLATE, chat_format(model)
    conv = new_conversation(model, AnswerSettings(conv_template=conv_template, system_prompt=system_prompt))
    for question, answer in _PROBE:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    try:
        prompt = conv.get_prompt()
    except ValueError:  # an API template (chatgpt, claude, ...) has no text rendering, only messages
        prompt = None
    rendering = json.dumps({"prompt": prompt, "messages": conv.to_openai_api_messages()}, sort_keys=True)
    return conv_template, PromptFormat.named(f"fastchat:{conv.name}", rendering)


def _temperature(question: Question, table: dict[str, float]) -> float:
    return float(table.get(question.category, DEFAULT_TEMPERATURE))


def _messages(model: str, settings: AnswerSettings, turns: list[tuple[str, str | None]]) -> list[Message]:
    """Chat messages for the next answer after ``turns`` (question, answer or None)."""
    if settings.conv_template == CHAT_TEMPLATE:
        messages: list[Message] = []
        if settings.system_prompt:
            messages.append({"role": "system", "content": settings.system_prompt})
        for question, answer in turns:
            messages.append({"role": "user", "content": question})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        return messages
    conv = new_conversation(model, settings)
    for question, answer in turns:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    return conv.to_openai_api_messages()


def local_model(backend) -> tuple[Any, Any] | None:
    """``(model, tokenizer)`` of a local transformers backend, else None."""
    raw = getattr(backend, "backend", backend)  # the backend behind the cache
    hook = getattr(type(raw), "model_and_tokenizer", None)
    if callable(hook):
        return raw.model_and_tokenizer()
    try:
        from tapir_hf.backend import HFBackend
    except ImportError:  # pragma: no cover
        return None
    if isinstance(raw, HFBackend):
        return raw.model, raw.tokenizer
    return None


def fastchat_generate(model, tokenizer, conv, temperature: float, max_new_tokens: int) -> str:
    """One answer as FastChat's ``get_model_answers`` makes it from the
    conversation's current prompt (the last message is the empty assistant
    turn), stripped."""
    import torch

    prompt = conv.get_prompt()
    input_ids = tokenizer([prompt]).input_ids
    device = getattr(model, "device", None)
    tensor = torch.as_tensor(input_ids)
    if device is not None:
        tensor = tensor.to(device)
    output_ids = model.generate(tensor, do_sample=temperature >= GREEDY_BELOW, temperature=temperature,
                                max_new_tokens=max_new_tokens)
    if model.config.is_encoder_decoder:
        output_ids = output_ids[0]
    else:
        output_ids = output_ids[0][len(input_ids[0]):]
    if conv.stop_token_ids:  # the template's stop tokens end the answer
        first = next((k for k, t in enumerate(output_ids) if t in conv.stop_token_ids), None)
        if first is not None:
            output_ids = output_ids[:first]
    text = tokenizer.decode(output_ids, spaces_between_special_tokens=False)
    stops = conv.stop_str
    if stops and isinstance(stops, list):
        found = sorted(p for p in (text.find(s) for s in stops) if p > 0)
        if found:
            text = text[: found[0]]
    elif stops and text.find(stops) > 0:
        text = text[: text.find(stops)]
    for special in tokenizer.special_tokens_map.values():
        for token in special if isinstance(special, list) else [special]:
            text = text.replace(token, "")
    text = text.strip()
    if conv.name == "xgen" and text.startswith("Assistant:"):
        text = text.replace("Assistant:", "", 1).strip()
    return text


def _local_answers(model: str, local: tuple[Any, Any], questions: list[Question], stored: dict,
                   settings: AnswerSettings, table: dict[str, float], tick: Callable[[], None]):
    """FastChat's loop: question by question, seeded, both turns."""
    import torch

    lm, tokenizer = local
    new, errors = [], []
    with torch.inference_mode():
        for q in questions:
            torch.manual_seed(settings.seed)
            conv = new_conversation(model, settings)
            temperature = _temperature(q, table)
            for turn, text in enumerate(q.turns, start=1):
                conv.append_message(conv.roles[0], text)
                conv.append_message(conv.roles[1], None)
                try:
                    answer = fastchat_generate(lm, tokenizer, conv, temperature, settings.max_new_tokens)
                except Exception as exc:  # noqa: BLE001 - a failure, retried on the next run
                    errors.append(f"{q.item_id} turn {turn}: {type(exc).__name__}: {exc}")
                    break
                conv.update_last_message(answer)
                if (q.item_id, turn) not in stored:
                    new.append((q.item_id, turn, answer, None))
                    tick()
    return new, errors


def stored_answers(store, answers_id: str) -> dict[tuple[str, int], tuple[int, str]]:
    """``{(item_id, turn): (response id, text)}`` stored under ``answers_id``
    (whatever path the model had then: the id names its weights)."""
    rows = records.responses_of_role(store, answers_id, ROLE)
    return {(item_id, rnd): (rid, text) for rid, item_id, rnd, text in rows}


def generate_answers(model: str, store, run_id: str, questions: list[Question],
                     settings: AnswerSettings) -> tuple[dict[tuple[str, int], tuple[int, str]], dict[str, Any]]:
    """Answers of ``model`` to both turns: ``{(item_id, turn): (response id,
    text)}``, plus counts (generated, reused, failures with their errors).
    ``scope`` is where the answers are kept: the runner passes an id keyed
    by what produces them (:func:`tapir_mtbench.runner.answers_id`). The
    model is loaded only when an answer is missing."""
    table = {**temperature_config(), **(settings.temperatures or {})}
    stored = stored_answers(store, run_id)
    info: dict[str, Any] = {"reused": len(stored), "generated": 0, "failures": 0, "errors": [],
                            "temperatures": table}
    missing = [(q, t) for q in questions for t in (1, 2) if (q.item_id, t) not in stored]
    if not missing:
        return stored, info
    extra = {"refresh": True} if settings.refresh else {}
    backend = load_cached(model, store, run_id, options=settings.model_options, **extra)
    local = local_model(backend) if settings.conv_template != CHAT_TEMPLATE else None
    info["generation"] = "fastchat-local" if local is not None else "messages"
    with bar(f"mtbench answers ({model})", total=len(missing)) as progress:
        if local is not None:
            todo = [q for q in questions if any((q.item_id, t) not in stored for t in (1, 2))]
            new, errors = _local_answers(model, local, todo, stored, settings, table, progress.update)
            records.save_responses(store, run_id, ROLE, model, new)
            info["generated"] += len(new)
            info["errors"] += errors
            info["failures"] += len(errors)
            return stored_answers(store, run_id), info
        for turn in (1, 2):
            todo = []
            for q in questions:
                if (q.item_id, turn) in stored:
                    continue
                if turn == 2 and (q.item_id, 1) not in stored:
                    continue  # turn one failed: nothing to condition on
                history = [(q.turns[0], stored[(q.item_id, 1)][1])] if turn == 2 else []
                todo.append((q, _messages(model, settings, [*history, (q.turns[turn - 1], None)])))
            if not todo:
                continue
            requests = [GenerationRequest(messages, GenerationParams(
                max_new_tokens=settings.max_new_tokens, temperature=_temperature(q, table), seed=settings.seed))
                for q, messages in todo]
            completions = backend.generate(requests, on_result=lambda i, c: progress.update())
            new = []
            for (q, _), completion in zip(todo, completions):
                if completion.error is not None:
                    info["failures"] += 1
                    info["errors"].append(f"{q.item_id} turn {turn}: {completion.error}")
                    continue
                new.append((q.item_id, turn, completion.text.strip(), completion.call_id))
            records.save_responses(store, run_id, ROLE, model, new)
            info["generated"] += len(new)
            stored = stored_answers(store, run_id)
    return stored, info
