"""The ``hf`` backend: any local transformers causal LM (folder or hub id).

* Batched generation with padding on the left, KV cache on, fp32 on CPU,
  ``torch.inference_mode``; requests are sorted by (max_new_tokens, prompt
  length) before batching, to cut padding.
* Greedy or temperature/top-p sampling, each sampled row with its own RNG
  seeded from (seed, sample index): distinct samples differ, and a sample
  is the same whatever else shares its batch.
* Stop strings, per-token logprobs with top-k alternatives, token counts,
  latency (each request's share of its batch's time), finish reason
  (``length`` when cut at max_new_tokens, else ``stop``); failures come back
  as ``Completion(error=...)``.
* :meth:`HFBackend.score`: per-token logprobs of given continuations
  (judges, lm-eval-style scoring).

Models are loaded lazily and cached in-process per (folder, content
fingerprint, options), so two backends on one folder share one model, and a
checkpoint re-trained into the same folder is loaded afresh.

torch and transformers are imported inside functions only: building a
backend and reading its ``model_id`` (all a cache hit needs) stays cheap.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from typing import Literal

from pydantic import field_validator

from tapir.errors import TapirError
from tapir.options import Options, option
from tapir.roles import Completion, GenerationRequest, Message, OnResult, TokenLogprob, deliver

from tapir_hf import embedded
from tapir_hf.quiet import quiet_transformers

_SMALL_FILE = 1 << 20  # config/tokenizer files up to this size are hashed by content


def resolve_name(model_name: str) -> tuple[str, bool]:
    """(path or hub id, is_local). ``embedded:NAME`` becomes its cached folder."""
    if model_name.startswith(embedded.PREFIX):
        return embedded.embedded_model_path(model_name), True
    path = Path(model_name).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    return model_name, False


def folder_fingerprint(folder: str | Path) -> str:
    """A short id of a model folder's contents: small config and tokenizer
    files by content, weight files by name, size and mtime (hashing GBs of
    weights would be slow). A checkpoint re-trained into the same folder gets
    a new fingerprint."""
    digest = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        stat = f.stat()
        digest.update(f.name.encode() + b"\0")
        if stat.st_size <= _SMALL_FILE and f.suffix in (".json", ".jinja", ".txt", ".model", ".py"):
            digest.update(f.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def weights_id(model_name: str, revision: str | None = None) -> str:
    """What identifies the weights, for model ids and cache keys: the
    embedded model's source fingerprint, a local folder's absolute path and
    content fingerprint, or the hub id (and revision). Cheap: nothing is
    loaded or converted."""
    if model_name.startswith(embedded.PREFIX):
        name = embedded.canonical_name(model_name)
        return f"{embedded.PREFIX}{name}@{embedded.fingerprint(name)}"
    path, local = resolve_name(model_name)
    if local:
        return f"{path}@{folder_fingerprint(path)}"
    return f"{path}@{revision}" if revision else path


# ---------------------------------------------------------------- loading

_MODELS: dict[tuple, tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()


def _torch_dtype(dtype: str | None, device: str):
    import torch

    if dtype in (None, "auto"):
        return torch.float32 if device == "cpu" else torch.bfloat16
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise TapirError(f"hf backend: unknown dtype '{dtype}'. Use one of: auto, {', '.join(names)}")
    return names[dtype]


def _device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(model_name: str, *, device: str | None = "auto", dtype: str | None = "auto",
               trust_remote_code: bool = False, revision: str | None = None):
    """``(tokenizer, model)`` for a folder, hub id or ``embedded:NAME``,
    cached in-process: a second call with the same folder contents and
    options returns the same objects. The tokenizer pads on the left; the
    model is in eval mode with the KV cache on."""
    path, local = resolve_name(model_name)
    device = _device(device)
    torch_dtype = _torch_dtype(dtype, device)
    key = (path, folder_fingerprint(path) if local else revision, device, str(torch_dtype), bool(trust_remote_code))
    with _LOAD_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(path, device, torch_dtype, trust_remote_code, revision)
        return _MODELS[key]


def clear_model_cache() -> None:
    with _LOAD_LOCK:
        _MODELS.clear()


def release_model(loaded: tuple[Any, Any]) -> None:
    """Forget ``(tokenizer, model)`` in the in-process cache and give its
    memory back (the accelerator's cache too); a backend still holding the
    same objects keeps them alive until it is closed as well."""
    with _LOAD_LOCK:
        for key in [k for k, v in _MODELS.items() if v is loaded]:
            del _MODELS[key]
    free_memory()


def free_memory() -> None:
    """Collect garbage and empty torch's CUDA cache when torch is loaded."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(path: str, device: str, torch_dtype, trust_remote_code: bool, revision: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        raise TapirError(f"hf backend: cannot load '{path}': {exc}") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    # transformers' Trainer leaves use_cache=False behind; without the KV
    # cache generation is ~7x slower.
    model.config.use_cache = True
    if model.generation_config is not None:
        model.generation_config.use_cache = True
    return tokenizer, model


# ---------------------------------------------------------------- backend


def prompt_ids(tokenizer, messages: list[Message], chat_template: bool = True) -> list[int]:
    """Token ids of a chat prompt, ready for the assistant's answer: the
    tokenizer's chat template with the generation prompt (as the trainer
    formats its examples), or, without a template or with
    ``chat_template=False``, the message texts joined by blank lines."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = tokenizer("\n\n".join(m["content"] for m in messages), add_special_tokens=True)["input_ids"]
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids



_DEVICE = re.compile(r"(cpu|mps|meta|cuda|xpu|npu|hpu|xla|ipu|mtia)(:\d+)?")


class HFBackend:
    """A local causal LM. ``model_name`` is a folder, a hub id or
    ``embedded:smollm2-135m-instruct``; options: :class:`HFBackend.Options`."""

    local_weights = True  # tapir.roles.FLAGS
    trainable = True

    class Options(Options):
        device: str = option("auto", "torch device; auto: cuda when available, else cpu")
        dtype: Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"] = option(
            "auto", "weights dtype; auto: float32 on cpu, bfloat16 on cuda")
        batch_size: int = option(16, "requests per forward batch", ge=1)
        max_length: int | None = option(None, "prompt + new tokens limit; default the model's "
                                              "max_position_embeddings", ge=2)
        chat_template: bool = option(True, "apply the tokenizer's chat template; false joins the message texts")
        trust_remote_code: bool = option(False, "let transformers run code shipped with the model")
        revision: str | None = option(None, "hub revision (hub ids only)")
        ignore_eos: bool = option(False, "keep generating past EOS up to max_new_tokens (benchmarks)")

        @field_validator("device")
        @classmethod
        def _torch_device(cls, v: str) -> str:
            # model.to(device) is called when the model is first loaded: for the student, after the
            # teacher's answers are paid for.
            if v != "auto" and not _DEVICE.fullmatch(v):
                raise ValueError("not a torch device: write auto, cpu, cuda, cuda:N (N a GPU index) or mps")
            return v

    def __init__(self, model_name: str, options: "HFBackend.Options | None" = None):
        options = options if options is not None else self.Options()
        self.options = options
        self.model_name = model_name
        self.device = options.device
        self.dtype = options.dtype
        self.batch_size = int(options.batch_size)
        self.max_length = options.max_length
        self.chat_template = bool(options.chat_template)
        self.trust_remote_code = bool(options.trust_remote_code)
        self.revision = options.revision
        self.ignore_eos = bool(options.ignore_eos)
        self.model_id = self._model_id()
        self._loaded: tuple[Any, Any] | None = None
        self._token_text: dict[int, str] = {}
        self._lock = threading.Lock()  # one generate/score at a time on this backend

    def _model_id(self) -> str:
        extras = []
        if self.dtype not in ("auto", None, "float32", "fp32"):
            extras.append(f"dtype={self.dtype}")
        if not self.chat_template:
            extras.append("plain")
        if self.ignore_eos:
            extras.append("ignore_eos")
        return "hf:" + weights_id(self.model_name, self.revision) + "".join(f"|{e}" for e in extras)

    # -- lazily loaded model ---------------------------------------------

    def _load(self):
        if self._loaded is None:
            self._loaded = load_model(self.model_name, device=self.device, dtype=self.dtype,
                                      trust_remote_code=self.trust_remote_code, revision=self.revision)
        return self._loaded

    def close(self) -> None:
        """Drop the loaded model (:class:`tapir.roles.Closable`); the next
        generate or score loads it again."""
        with self._lock:
            loaded, self._loaded = self._loaded, None
            self._token_text.clear()
        if loaded is not None:
            release_model(loaded)

    @property
    def tokenizer(self):
        return self._load()[0]

    @property
    def model(self):
        return self._load()[1]

    def _limit(self) -> int:
        if self.max_length:
            return int(self.max_length)
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048)

    # -- prompts -----------------------------------------------------------

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Token ids of a chat prompt, ready for the assistant's answer."""
        return prompt_ids(self.tokenizer, messages, self.chat_template)

    def _token(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    # -- generation -------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], on_result: OnResult | None = None) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)

        def finish(i: int, completion: Completion) -> None:
            results[i] = completion
            if on_result:
                on_result(i, completion)

        with self._lock:
            try:
                self._load()
                limit = self._limit()
            except Exception as exc:  # noqa: BLE001 - a load failure answers every request
                for i in range(len(requests)):
                    finish(i, Completion(error=f"{type(exc).__name__}: {exc}"))
                return results  # type: ignore[return-value]
            prepared = []
            for i, request in enumerate(requests):
                try:
                    ids = self.prompt_ids(request.messages)
                    room = limit - len(ids)
                    if room < 1:
                        raise TapirError(f"prompt has {len(ids)} tokens; max_length is {limit}")
                    prepared.append((i, ids, min(request.params.max_new_tokens, room)))
                except Exception as exc:  # noqa: BLE001
                    finish(i, Completion(error=f"{type(exc).__name__}: {exc}"))
            prepared.sort(key=lambda p: (p[2], len(p[1])), reverse=True)
            for start in range(0, len(prepared), self.batch_size):
                batch = prepared[start : start + self.batch_size]
                done = self._generate_safely(requests, batch)
                for i, completion in done:
                    results[i] = completion
                deliver(on_result, done)  # a batch's answers: one write
        return results  # type: ignore[return-value]

    def _generate_safely(self, requests, batch):
        """A failing batch is retried one request at a time, so one bad
        request cannot fail its neighbours."""
        try:
            return self._generate_batch(requests, batch)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                return [(batch[0][0], Completion(error=f"{type(exc).__name__}: {exc}"))]
            return [pair for one in batch for pair in self._generate_safely(requests, [one])]

    def _generate_batch(self, requests, batch) -> list[tuple[int, Completion]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from tapir_hf.decoding import RowSampler, RowStopper

        started = time.perf_counter()
        tok, model = self._loaded
        input_ids, attention = _left_pad([ids for _, ids, _ in batch], tok.pad_token_id, model.device)
        width = input_ids.shape[1]
        params = [requests[i].params for i, _, _ in batch]
        max_new = [m for _, _, m in batch]
        eos = _eos_ids(model, tok)

        sampler = RowSampler(
            temperatures=[p.temperature for p in params],
            top_ps=[p.top_p for p in params],
            seeds=[p.sample_seed(requests[i].sample) for p, (i, _, _) in zip(params, batch)],
            top_logprobs=[p.top_logprobs for p in params],
        )
        stopper = RowStopper(tok, width, max_new, [p.stop for p in params])
        config = _generation_config(model, tok, eos, max(max_new), self.ignore_eos)
        kwargs = {}
        if sampler.active:
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        if stopper.active:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stopper])
        with torch.inference_mode():
            sequences = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                                       **kwargs)
        generated = sequences[:, width:].tolist()
        # Each request's share of its batch's time: summed over a stage's
        # calls it is the generation time, not the batch time times its rows.
        latency = (time.perf_counter() - started) / len(batch)
        out = []
        for row, (i, ids, _) in enumerate(batch):
            tokens = generated[row][: stopper.length(row, len(generated[row]))]
            count = len(tokens)
            end = next((k for k, t in enumerate(tokens) if t in eos), None)
            stopped = end is not None and not self.ignore_eos
            if stopped:
                tokens = tokens[:end]
                count = end + 1  # the EOS token was generated too
            text = tok.decode(tokens, skip_special_tokens=True)
            cut = _cut_at_stop(text, params[row].stop)
            stopped = stopped or cut != text
            text = cut
            # "length": cut at max_new_tokens (or at the context limit), as the OpenAI API says it.
            finish = "stop" if stopped or count < max_new[row] else "length"
            logprobs = None
            if params[row].top_logprobs > 0:
                logprobs = [
                    TokenLogprob(self._token(t), lp, [(self._token(a), b) for a, b in top])
                    for t, (lp, top) in zip(tokens, sampler.logprobs(row, len(tokens)))
                ]
            out.append((i, Completion(text=text, logprobs=logprobs, prompt_tokens=len(ids),
                                      completion_tokens=count, latency_s=latency, finish_reason=finish)))
        return out

    # -- scoring ----------------------------------------------------------

    def score(self, prompts: Sequence[list[Message]], continuations: Sequence[str]) -> list[list[float]]:
        """Per-token log-probabilities of each continuation after its
        (chat-templated) prompt. The continuation is tokenized on its own, so
        its tokens are exactly ``tokenizer(continuation, add_special_tokens=False)``."""
        if len(prompts) != len(continuations):
            raise TapirError(f"score: {len(prompts)} prompts but {len(continuations)} continuations")
        import torch

        with self._lock:
            tok, model = self._load()
            rows = [(self.prompt_ids(p), tok(c, add_special_tokens=False)["input_ids"])
                    for p, c in zip(prompts, continuations)]
            limit = self._limit()
            for n, (p_ids, c_ids) in enumerate(rows):
                if len(p_ids) + len(c_ids) > limit:
                    raise TapirError(f"score: prompt {n} + continuation have {len(p_ids) + len(c_ids)} tokens; "
                                     f"max_length is {limit}")
            order = sorted(range(len(rows)), key=lambda n: len(rows[n][0]) + len(rows[n][1]), reverse=True)
            out: list[list[float]] = [[] for _ in rows]
            keep_arg, positions_arg = _accepts(model, "logits_to_keep"), _accepts(model, "position_ids")
            for start in range(0, len(order), self.batch_size):
                chunk = [n for n in order[start : start + self.batch_size] if rows[n][1]]
                if not chunk:
                    continue
                input_ids, attention = _left_pad([rows[n][0] + rows[n][1] for n in chunk], tok.pad_token_id,
                                                 model.device)
                keep = max(len(rows[n][1]) for n in chunk) + 1
                kwargs = {"logits_to_keep": keep} if keep_arg else {}
                if positions_arg:  # counted from each row's first real token (absolute-position models)
                    kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False,
                                   **kwargs).logits[:, -keep:]
                    logprobs = torch.log_softmax(logits.float(), dim=-1)
                    for row, n in enumerate(chunk):
                        c_ids = rows[n][1]
                        # the token at sequence position t is predicted at t - 1
                        lp = logprobs[row, keep - len(c_ids) - 1 : keep - 1]
                        idx = torch.tensor(c_ids, device=lp.device).unsqueeze(-1)
                        out[n] = lp.gather(-1, idx).squeeze(-1).tolist()
            return out


# ---------------------------------------------------------------- helpers


def _left_pad(seqs: list[list[int]], pad: int, device):
    """``(input_ids, attention_mask)`` with every row padded on the left."""
    import torch

    width = max(map(len, seqs))
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return input_ids, attention


def _accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _eos_ids(model, tok) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tok.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


def _generation_config(model, tok, eos: set[int], max_new_tokens: int, ignore_eos: bool):
    """Only what our params say: the model's own sampling defaults (a
    temperature, a repetition penalty) are left out, so a request means the
    same on every model."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens if ignore_eos else None,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=sorted(eos) or None,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((p for p in (text.find(s) for s in stops if s) if p >= 0), default=-1)
    return text[:cut] if cut >= 0 else text
