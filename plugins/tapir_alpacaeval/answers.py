"""The model's outputs for AlpacaEval: in the format the model was trained
on, stored under what produces them.

**The prompt.** Each instruction is one user message (after the optional
system message), sent as chat messages to the model's backend, which renders
them. A local checkpoint (backends ``hf`` and ``vllm``) renders them with its
tokenizer's chat template and the generation prompt
(``apply_chat_template(messages, add_generation_prompt=True)``), which is
what the trainer renders for the same messages
(``tapir_trainers.collate.encode_examples``: the prompt part of every
training example); the trainer saves the template it trained with into the
checkpoint (ChatML when the base model had none), so a student is asked in
its training format. A tokenizer without a chat template, or the backend
option ``chat_template: false``, gets the message texts joined by blank
lines (``plain``); an API model gets chat messages and its server applies
its own template (``endpoint``). :func:`answer_template` says which, and
every result row records it (``meta.template``).

**The key.** Outputs are stored (``responses``, role ``answer``) under their
producer (:class:`Producer`): the backend's model id (for a local checkpoint
its folder and content fingerprint, so new weights in the same folder are a
new producer), the template, the generation settings (``max_new_tokens``,
greedy, the system prompt) and the instruction set's version. A run whose
producer already answered in another run (only the judge options differ,
say) copies those outputs and neither loads nor asks the model; a forced run
generates again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.models import load_cached, resolve
from tapir.progress import bar
from tapir.roles import GenerationParams, GenerationRequest
from tapir.store import records

ANSWER = "answer"
LOCAL_BACKENDS = ("hf", "vllm")  # backends that render chat messages with the tokenizer's chat template


@dataclass(frozen=True)
class Template:
    """How the model's prompt is rendered."""

    kind: str  # "chat_template", "plain" or "endpoint"
    digest: str | None = None  # sha256 (12 hex) of the chat template's text
    why: str = ""

    @property
    def label(self) -> str:
        """As tapir.benchmodel.PromptFormat labels it (``chat_template@<digest>``)."""
        return f"chat_template@{self.digest}" if self.kind == "chat_template" else self.kind


def _template_digest(template: Any) -> str:
    from tapir.benchmodel import template_digest

    return template_digest(template if isinstance(template, str) else json.dumps(template, sort_keys=True))


def answer_template(model: str, model_options: dict[str, Any] | None = None) -> Template:
    """Which template ``model`` gets for a chat prompt: the backend's own rule
    (tapir_hf.backend.prompt_ids), read from the tokenizer only (the weights
    are not loaded)."""
    # The rule of tapir_hf.backend.prompt_ids; tapir.benchmodel reads the same
    # template from a checkpoint folder's files for MT-Bench and lm-eval.
    spec = resolve(model, model_options)
    if spec.backend not in LOCAL_BACKENDS:
        return Template("endpoint", why=f"backend {spec.backend} sends chat messages; the server renders them")
    if spec.options.get("chat_template", True) is False:
        return Template("plain", why="the backend option chat_template is false: message texts joined")
    try:
        from transformers import AutoTokenizer

        from tapir_hf.backend import resolve_name
        from tapir_hf.quiet import quiet_transformers

        path, _ = resolve_name(spec.name)
        with quiet_transformers(warnings=False):
            tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=bool(spec.options.get("trust_remote_code", False)),
                revision=spec.options.get("revision"))
    except Exception as exc:  # noqa: BLE001 - the generation itself reports a model that cannot load
        raise TapirError(f"alpacaeval: the tokenizer of '{model}' could not be read to tell its chat template "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return Template("plain", why="the tokenizer has no chat template: message texts joined")
    return Template("chat_template", _template_digest(template), why="the tokenizer's chat template")


@dataclass(frozen=True)
class Producer:
    """What produces the outputs; their key in ``responses.model``."""

    model_id: str  # the backend's model id: for a local checkpoint its path and content fingerprint
    template: Template
    params: GenerationParams
    system_prompt: str | None
    data_version: str

    @property
    def digest(self) -> str:
        payload = {"model": self.model_id, "template": self.template.label, "params": self.params.resolved(),
                   "system_prompt": self.system_prompt, "data": self.data_version}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        return f"{self.model_id}|answers:{self.digest}"


def producer_model_id(backend) -> str:
    """The benchmarked model's weights, as the LLM-call cache names them: the
    backend's model id (hf/vllm: folder path and content fingerprint; the
    run id uses tapir.benchmodel.weights_fingerprint)."""
    return backend.model_id


@dataclass
class Answers:
    """The outputs of one run, and where they came from."""

    outputs: dict[tuple[str, int], tuple[int, str]]  # {(item_id, 0): (response id, text)}
    failures: list[tuple[str, str]] = field(default_factory=list)  # (item_id, error)
    producer: Producer | None = None
    generated: int = 0  # asked of the model in this run (LLM-cache hits included)
    cached: int = 0  # of those, answered from the LLM-call cache
    reused: int = 0  # copied from another run with the same producer

    def describe(self) -> dict[str, Any]:
        return {"producer": self.producer.key if self.producer else None, "generated": self.generated,
                "from_llm_cache": self.cached, "reused_from_other_runs": self.reused}


def _copy_from_other_runs(store, run_id: str, key: str, item_ids: Sequence[str]) -> int:
    """Copy the outputs another run stored under the same producer; returns how many."""
    if not item_ids:
        return 0
    found: dict[str, tuple[str, int | None]] = {}
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start:start + 500])
        for item_id, text, call_id in records.answers_elsewhere(store, ANSWER, key, run_id, chunk):
            found.setdefault(item_id, (text, call_id))
    records.save_responses(store, run_id, ANSWER, key, [(i, 0, t, c) for i, (t, c) in found.items()])
    return len(found)


def generate_answers(model: str, store, run_id: str, instructions: Sequence, *, data_version: str,
                     max_new_tokens: int, system_prompt: str | None, model_options: dict[str, Any] | None,
                     refresh: bool = False, label: str = "alpacaeval") -> Answers:
    """The model's greedy output for each instruction (objects with
    ``item_id`` and ``instruction``): stored ones first, then another run's
    under the same producer (not when ``refresh``), then the model."""
    backend = load_cached(model, store, run_id, options=model_options or None, refresh=refresh)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    producer = Producer(producer_model_id(backend), answer_template(model, model_options), params,
                        system_prompt, data_version)
    key = producer.key
    answers = Answers({}, producer=producer)
    stored = records.load_responses(store, run_id, ANSWER, key)
    if not refresh:
        missing = [i.item_id for i in instructions if (i.item_id, 0) not in stored]
        answers.reused = _copy_from_other_runs(store, run_id, key, missing)
        if answers.reused:
            stored = records.load_responses(store, run_id, ANSWER, key)
    todo = [i for i in instructions if (i.item_id, 0) not in stored]
    if todo:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        requests = [GenerationRequest([*system, {"role": "user", "content": i.instruction}], params,
                                      meta={"role": ANSWER, "item_id": i.item_id}) for i in todo]
        with bar(f"{label}: answers ({model})", len(todo)) as b:
            completions = backend.generate(requests, on_result=lambda i, c: b.update())
        records.save_responses(store, run_id, ANSWER, key, [
            (i.item_id, 0, c.text, c.call_id) for i, c in zip(todo, completions) if c.error is None])
        answers.failures = [(i.item_id, c.error) for i, c in zip(todo, completions) if c.error is not None]
        answers.generated = len(todo)
        answers.cached = sum(1 for c in completions if c.cached)
        stored = records.load_responses(store, run_id, ANSWER, key)
    answers.outputs = stored
    return answers
