"""The small, batch-first protocols each role implements, and the records
they pass around.

A teacher, judge or rewriter is a prompt over a :class:`Backend`; backends
are separate plugins (local transformers, litellm, vLLM). Everything works on
lists, so a backend can batch on a GPU or run requests concurrently against
an API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Protocol, Sequence, runtime_checkable

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": "..."}


@dataclass
class GenerationParams:
    """Sampling parameters every backend understands.

    ``top_logprobs`` > 0 asks for the most likely tokens at each position
    (judges read scores from them); backends that cannot do it leave
    :attr:`Completion.logprobs` as ``None``.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    seed: int | None = None

    def resolved(self) -> dict[str, Any]:
        """The parameters as they enter the cache key (greedy ignores top_p/seed)."""
        data = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": float(self.temperature),
            "stop": list(self.stop),
            "top_logprobs": self.top_logprobs,
        }
        if self.temperature > 0:
            data["top_p"] = float(self.top_p)
            data["seed"] = self.seed
        return data

    def sample_seed(self, sample: int) -> int:
        """The random seed for sample ``sample``: derived from (seed, sample)
        so distinct samples differ and each one is reproducible, whatever
        else is batched with it. Backends that sample use this."""
        import hashlib

        digest = hashlib.sha256(f"{self.seed or 0}:{sample}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class GenerationRequest:
    messages: list[Message]
    params: GenerationParams = field(default_factory=GenerationParams)
    sample: int = 0  # index of the sample when n distinct samples are wanted
    # Who asks (role, stage_key, item_id, round): recorded with the call in
    # llm_calls, never part of the cache key.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Completion:
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_s: float | None = None
    error: str | None = None
    cached: bool = False
    call_id: int | None = None  # row id in llm_calls
    finish_reason: str | None = None  # "stop", "length" (cut at max_new_tokens), ...
    http_status: int | None = None  # of the failed request, when there was one
    # Provenance, as the provider reports it: the model that answered (an
    # alias resolved to a snapshot, a router's pick) and its
    # system_fingerprint; a local backend may put its weights' fingerprint
    # here, or leave both None.
    provider_model: str | None = None
    system_fingerprint: str | None = None
    # Of a failed call: transient | permanent | content (what helps: a retry, a fix by the
    # user that stops the stage at once, or nothing but this item failing) and its cause
    # (quota, auth, model_not_found, rate_limit, timeout, ...; see docs/pipeline.md).
    failure_kind: str | None = None
    failure_cause: str | None = None
    # Every attempt sent for this call, failed ones included: dicts with n, outcome
    # ("ok" or the failure's cause), http_status, seconds, billed ("no" | "maybe").
    attempts: list[dict] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


OnResult = Callable[[int, Completion], None]


@runtime_checkable
class GroupedResults(Protocol):
    """An ``on_result`` that can take several results in one write: the LLM
    cache's, whose ``group()`` is one store transaction, so the results a
    backend has in hand at once (a burst of answers, a vLLM chunk) commit
    together instead of one commit each. Backends hand results over with
    :func:`deliver`, which uses the group when there is one."""

    def __call__(self, index: int, completion: Completion) -> None: ...

    def group(self) -> ContextManager[None]:
        """A scope the results delivered inside are written in together;
        what was delivered before an exception inside it is still kept.
        Once an exception has come out of it (the stage raised), it keeps
        taking results without handing them to the stage: they are
        recorded, so a re-run is served them (:func:`deliver_after_failure`)."""
        ...


def deliver(on_result: OnResult | None, results: Iterable[tuple[int, Completion]]) -> None:
    """Hand ``results`` (index, completion), all in hand now, to
    ``on_result`` in order; in one group when it is :class:`GroupedResults`."""
    if on_result is None:
        return
    if isinstance(on_result, GroupedResults):
        with on_result.group():
            for i, completion in results:
                on_result(i, completion)
    else:
        for i, completion in results:
            on_result(i, completion)


def deliver_after_failure(on_result: OnResult | None, results: Iterable[tuple[int, Completion]]) -> None:
    """Hand over the answers that came in after ``on_result`` raised (the
    requests that were in flight): a :class:`GroupedResults` records them
    without handing them to the stage again; a plain callback gets none."""
    if isinstance(on_result, GroupedResults):
        deliver(on_result, results)


@runtime_checkable
class Backend(Protocol):
    """A model that answers chat requests.

    ``model_id`` names the model for the cache key: two backends serving
    different weights must never share one.
    """

    model_id: str

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        """Answer every request. Call ``on_result(index, completion)`` as each
        finishes (so a crash mid-batch loses nothing already paid for);
        results that are in hand together go through :func:`deliver`.
        Failures are returned as completions with ``error`` set, never raised,
        except a permanent one that every other request would share (out of
        quota, key refused, no such model, over the budget): then a backend
        may send nothing more and raise :class:`tapir.errors.PermanentFailure`
        after delivering what was in flight. When ``on_result`` raises, a
        backend sends nothing more and raises it; one with requests in flight
        may first wait for them and pass them to :func:`deliver_after_failure`
        (they are paid for).
        """
        ...


@runtime_checkable
class Closable(Protocol):
    """A backend that holds something worth freeing between stages: GPU or
    CPU memory, an inference engine, connections. The pipeline calls
    ``close()`` when a stage is done with a student backend, before every
    training round and at the end of a run; a later ``generate`` loads the
    model again. A backend that holds nothing need not have it."""

    def close(self) -> None:
        """Free what the backend holds; safe to call twice."""
        ...


class ScoringBackend(Backend, Protocol):
    def score(self, prompts: Sequence[list[Message]], continuations: Sequence[str]) -> list[list[float]]:
        """Per-token log-probabilities of each continuation after its prompt."""
        ...


@dataclass
class Item:
    """One instruction (with optional input and reference answer)."""

    id: str
    instruction: str
    input: str = ""
    output: str | None = None
    task_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat turns that ask this item: its system prompt (``meta["system"]``,
        from a dataset's system turn), then the prompt as the user turn."""
        system = self.meta.get("system")
        user = [{"role": "user", "content": self.prompt}]
        return [{"role": "system", "content": system}, *user] if system else user


@dataclass
class Judgment:
    """A judge's verdict. ``raw`` keeps the judge's text so parsing can be
    redone; a failed parse sets ``error`` and leaves scores ``None``.
    """

    score_a: float | None = None
    score_b: float | None = None
    preference: float | None = None  # P(b preferred), for preference judges
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class JudgeRequest:
    """What a judge looks at: a question and one answer (single grading) or
    two answers (pairwise / preference), optionally a reference answer and
    earlier turns. ``draw``: 0 at first; a re-run after a reply without a
    usable score asks draw n, which a judge turns into new sample indices
    (a fresh reply, not the cached one)."""

    question: str
    answer_a: str
    answer_b: str | None = None
    reference: str | None = None
    category: str | None = None
    turns: list[dict[str, str]] | None = None
    item_id: str | None = None
    draw: int = 0


@dataclass
class Rewrite:
    """One item's rewrite (Appendix C).

    ``instruction`` is the refined instruction (equal to the original when
    the instruction was not refined); ``answer`` the enhanced answer the
    student trains on, paired with the *original* instruction. A failed
    rewrite sets ``error`` (a reason a person can read) and is never the
    original item passed off as rewritten. ``call_ids`` are the
    ``llm_calls`` rows used (:attr:`Completion.call_id`). ``rejected``:
    which reply a check rejected (``"refinement"``: the rewriter's,
    ``"answer"``: the teacher's), None when a call failed: another draw of
    a rejected reply may pass.
    """

    instruction: str
    answer: str
    error: str | None = None
    call_ids: list[int] = field(default_factory=list)
    rejected: str | None = None


# What the pipeline calls. Every component class also declares its options
# as a nested ``Options`` model (tapir.options) and is built as
# ``Class(backend, options)`` (teachers, judges, classifiers, rewriters),
# ``Class(model_name, options)`` (backends) or ``Class(options)`` (trainers,
# evaluators, encoders).


class Teacher(Protocol):
    def answer(self, items: Sequence[Item], params: GenerationParams,
               on_result: OnResult | None = None, *, samples: Sequence[int] | None = None) -> list[Completion]:
        """One answer per item; ``on_result(i, completion)`` as each finishes.
        ``samples``: each item's sample index (default 0; a fresh draw asks with a new one)."""
        ...

    def create_instructions(self, groups: Sequence[tuple[str, Sequence[Item]]], samples: Sequence[int],
                            params: GenerationParams, on_result: OnResult | None = None) -> list[Completion]:
        """One new instruction per (task type, example items) group; ``samples``
        are the sample indices (a retry asks with a new one)."""
        ...

    def clean_instruction(self, text: str) -> str | None:
        """The instruction in a creation reply, or ``None`` when it is malformed."""
        ...


class Judge(Protocol):
    name: str
    kind: str  # pairwise | single | preference | reference | loss
    needs_model: bool  # needs judge.model
    needs_student: bool  # built over the student's backend (student-loss)
    reads_student_answer: bool  # False: the student need not answer at all

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One judgment per request; failures set ``error``, never raise.
        A pairwise judge sets ``details["orders_used"]`` (1 or 2)."""
        ...


class Classifier(Protocol):
    labels: Sequence[str]
    needs_model: bool  # needs classifier.model (the llm classifier)

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(label, confidence) per text. A classifier with ``needs_model``
        also takes ``item_ids=`` (one per text), recorded with its calls in
        ``llm_calls``; the classify stage passes them."""
        ...


class Rewriter(Protocol):
    def rewrite(self, items: Sequence[Item], teacher: Teacher, params: GenerationParams,
                on_result: Callable[[int, Rewrite], None] | None = None, *,
                teacher_params: GenerationParams | None = None,
                samples: Sequence[int] | None = None) -> list[Rewrite]:
        """One :class:`Rewrite` per item (its task type set; its teacher answer
        in ``output``). ``params`` drive the rewriter model, ``teacher_params``
        the teacher's answers to refined instructions. ``samples``: each
        item's sample index for its calls (default 0; a fresh draw after a
        rejected rewrite asks with a new one)."""
        ...


class Encoder(Protocol):
    def embed(self, texts: Sequence[str]) -> Any:
        """L2-normalised embeddings, one row per text (a numpy array)."""
        ...


@dataclass
class TrainExample:
    prompt: list[Message]
    response: str
    weight: float = 1.0


class Trainer(Protocol):
    def train(self, base_model: str, examples: Sequence[TrainExample], output_dir: str) -> dict[str, Any]:
        """Fine-tune ``base_model`` on weighted examples and save a loadable
        HF folder in ``output_dir`` (resuming only a checkpoint it wrote there
        for the same job). Returns metrics (loss, tokens/s, ...)."""
        ...


class Evaluator(Protocol):
    """A benchmark runner. ``tapir bench`` validates the evaluator's
    declared ``Options``, asks :meth:`preflight` for problems before anything
    is written, starts a run for (benchmark, model, options), calls
    :meth:`run`, and stores the returned rows in ``benchmark_results``.
    Evaluators keep their own answers and judgments in the store under
    ``run_id`` (items, responses, judgments), so a re-run repeats nothing but
    the failures; ``force`` redoes everything, bypassing the LLM cache.
    """

    name: str

    def preflight(self, model: str) -> list[str]:
        """Problems found without calling anything (unknown model, missing key, data)."""
        ...

    def run(self, model: str, store: Any, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        """Run the benchmark on ``model``; return metric rows, each a dict
        with ``task, metric, value, stderr, n`` and ``meta`` (judge,
        judge_mode, failures, failure_reasons, failure_example, data_version,
        subset)."""
        ...


# --------------------------------------------------------------------------- capabilities
#
# What a component class may offer beyond its role's protocol. The core asks
# for a capability through the registry's record (``Component.capabilities``,
# ``Component.capability(name)``), never by probing the class: tapir.plugins
# checks each factory ONCE, when it is registered, and refuses a capability
# of the wrong shape with a message naming the plugin. Capabilities are read
# from the class, not from a built component: whatever a run knows (model
# name, options, counts) is passed in, nothing is kept on the component.


@dataclass
class CallEstimate:
    """LLM calls a stage is expected to make: ``calls`` requests answered by
    ``role``'s model (``"judge"``, ``"rewriter"``, ``"teacher"``), each with
    about ``prompt_tokens`` tokens of prompt."""

    role: str
    calls: int
    prompt_tokens: int


class MissingCredentials(Protocol):
    """A backend's check for its credentials, without sending anything."""

    @classmethod
    def missing_credentials(cls, model_name: str, options: Any) -> list[str]:
        """Environment variables a call to ``model_name`` with ``options`` (a
        dict or the backend's Options) needs and does not find."""
        ...


class Priced(Protocol):
    """A backend that knows what its calls cost."""

    @classmethod
    def price(cls, model_name: str, tokens_in: int, tokens_out: int) -> float | None:
        """Estimated USD for that many tokens, None when the model has no known price."""
        ...


class Servable(Protocol):
    """A backend that can send its calls to OpenAI-compatible servers tapir
    starts (``student.serve.launch``)."""

    @classmethod
    def served_at(cls, options: dict[str, Any], bases: list[str]) -> dict[str, Any]:
        """``options`` (the config's mapping) made to send the calls to the
        servers at ``bases`` (``http://127.0.0.1:PORT/v1``, one per replica);
        a server the options already name wins."""
        ...


class Tokenized(Protocol):
    """A local-weights backend that can point at its model's tokenizer."""

    @classmethod
    def tokenizer_file(cls, model_name: str, options: Any) -> str | None:
        """The model's ``tokenizer.json`` on this machine (its folder, a
        download cache), None when there is none on disk; nothing is
        downloaded or loaded."""
        ...


class Estimating(Protocol):
    """A judge or rewriter that says how many calls a stage of it makes."""

    @classmethod
    def estimate(cls, stage: str, n: int, prompt_tokens: int, options: Any) -> list[CallEstimate]:
        """The calls stage ``stage`` makes for ``n`` items whose prompts are
        about ``prompt_tokens`` tokens, with the component's validated
        ``options``."""
        ...


class Stepping(Protocol):
    """A trainer that can say how long a round is before it runs."""

    @classmethod
    def steps_for(cls, options: Any, n_examples: int) -> int | None:
        """Optimizer steps of one training round on ``n_examples`` examples
        with the trainer's validated ``options`` (None: not known)."""
        ...


class Sampling(Protocol):
    """A judge or classifier that says how it samples its replies."""

    @classmethod
    def generation(cls, options: Any) -> GenerationParams:
        """The :class:`GenerationParams` of the component's calls with its
        validated ``options`` (its defaults, then what ``options`` override).
        Without this capability the core assumes greedy replies and does not
        know their length (the dry run says so)."""
        ...


class InputChecking(Protocol):
    """A classifier that reads files its options name (``InputFile``) and
    can say what is wrong with their content before the run."""

    @classmethod
    def input_problems(cls, options: Any) -> list[str]:
        """What is wrong with the files its validated ``options`` name (their
        paths already resolved from the config's folder), one line each;
        empty: fine. Only the files are read: nothing is built or loaded.
        Without this capability preflight checks only that the files exist."""
        ...


class Answering(Protocol):
    """A rewriter that says whose model answers a rewritten item."""

    @classmethod
    def answered_by(cls, options: Any) -> str:
        """``"teacher"`` when the teacher answers the refined instruction (its
        model's replies become the training answer), ``"rewriter"`` when the
        rewriter's own model writes the answer, for the rewriter's validated
        ``options``. Without this capability the core assumes ``"teacher"``
        (what :class:`Rewriter` describes: the teacher answers it)."""
        ...


class Bounded(Protocol):
    """A trainer whose examples have a longest length."""

    @classmethod
    def max_length(cls, options: Any) -> int | None:
        """Tokens per example with the trainer's validated ``options``: a
        prompt this long leaves nothing to learn, so the trainer drops it
        (None: no limit). Without this capability the core checks no data
        row's length before the run (the trainer reports it at training)."""
        ...


# The roles an ``answered_by`` capability may name.
ANSWERED_BY = ("teacher", "rewriter")

# Declared booleans (class attributes) a component may carry; the core reads
# them from the registry's record (``Component.flags``).
FLAGS = {
    # local_weights: the model is weights on this machine (a folder or a hub
    # id it downloads): preflight checks a folder, greedy replies repeat;
    # trainable: tapir's trainers can fine-tune this backend's models (the
    # student's backend).
    "backends": ("local_weights", "trainable"),
    "judges": ("needs_model", "needs_student", "reads_student_answer"),
    "classifiers": ("needs_model",),
}

# Capability name -> (the protocol that declares it, the parameters the
# method takes when read from the class), by role.
CAPABILITIES: dict[str, dict[str, tuple[type, tuple[str, ...]]]] = {
    "backends": {
        "missing_credentials": (MissingCredentials, ("model_name", "options")),
        "price": (Priced, ("model_name", "tokens_in", "tokens_out")),
        "served_at": (Servable, ("options", "bases")),
        "tokenizer_file": (Tokenized, ("model_name", "options")),
    },
    "judges": {
        "estimate": (Estimating, ("stage", "n", "prompt_tokens", "options")),
        "generation": (Sampling, ("options",)),
    },
    "classifiers": {"generation": (Sampling, ("options",)), "input_problems": (InputChecking, ("options",))},
    "rewriters": {
        "estimate": (Estimating, ("stage", "n", "prompt_tokens", "options")),
        "answered_by": (Answering, ("options",)),
    },
    "trainers": {
        "steps_for": (Stepping, ("options", "n_examples")),
        "max_length": (Bounded, ("options",)),
    },
}
