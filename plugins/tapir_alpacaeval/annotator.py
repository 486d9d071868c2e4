"""alpaca_eval's own annotator, read from the installed package at run time.

Reference mode judges exactly as ``alpaca_eval`` 0.6.6 does with an
annotator config such as ``weighted_alpaca_eval_gpt4_turbo`` (AlpacaEval
2.0's default). Nothing of it is copied here: the annotator is built by
``alpaca_eval.annotators.PairwiseAnnotator`` from its ``configs.yaml``, and

* which instructions are order-swapped comes from its own preprocessing
  (``SingleAnnotator._preprocess``: the ``RandomSwitchTwoColumnsProcessor``,
  seeded on the instruction and the annotator seed, 0 by default);
* the prompt is its template filled by its own ``_make_prompts``, then turned
  into chat messages as its ``openai_completions`` decoder does
  (``prompt.strip()`` when ``is_strip``, then ``utils.prompt_to_chatml``);
* the request parameters are those that decoder sends: ``model`` and the
  annotator's ``completions_kwargs`` (``max_tokens``, ``temperature``,
  ``logprobs``, ``top_logprobs`` ...), plus the ``top_p`` / ``temperature``
  defaults of its ``_openai_completion_helper`` where the config leaves them
  out, read from the function signatures;
* a reply is parsed by the annotator's own ``fn_completion_parser``
  (``logprob_parser`` with its ``completion_parser_kwargs``) through its
  ``_parse_completions``, from the reply rebuilt as the OpenAI choice dict
  the parser reads (``completion_key: completions_all``);
* the swap is undone by its own postprocessing (``3 - preference`` on
  swapped rows), and two identical outputs get 1.5 without a request, as
  ``PairwiseAnnotatorLocal._preprocess`` does.

``alpaca_eval`` sets the root logger to INFO when imported and logs a
traceback per unparsable reply; its calls here run with logging quietened.
"""

from __future__ import annotations

import inspect
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.roles import Completion, GenerationParams

DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
# Request keys a tapir backend expresses through GenerationParams.
_PARAM_KEYS = {"model", "max_tokens", "temperature", "top_p", "logprobs", "top_logprobs"}


@contextmanager
def _quiet():
    """alpaca_eval logs at INFO on the root logger (and a traceback for each
    unparsable reply); keep that out of tapir's output."""
    root = logging.getLogger()
    level = root.level
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)
        root.setLevel(level)


def alpaca_eval_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("alpaca_eval")
    except Exception:
        return None


@dataclass
class Pair:
    """One instruction to judge: output_1 is the reference, output_2 the model's."""

    key: str  # the item id
    instruction: str
    output_1: str
    output_2: str


@dataclass
class Planned:
    key: str
    swapped: bool  # alpaca_eval shows output_2 (the model's) first
    messages: list[dict[str, Any]] | None  # None: identical outputs, no request (preference 1.5)


@dataclass
class Verdict:
    shown: float | None  # alpaca_eval's preference for the order shown, in [1, 2]; None: failed
    reason: str | None = None  # "<kind>: <text>" when failed

    @property
    def kind(self) -> str | None:
        return self.reason.split(":", 1)[0] if self.reason else None


class ReferenceAnnotator:
    """One alpaca_eval annotator config (default ``weighted_alpaca_eval_gpt4_turbo``)."""

    def __init__(self, name: str = DEFAULT_ANNOTATOR, seed: int = 0):
        root = logging.getLogger()
        level = root.level
        try:
            with _quiet():
                from alpaca_eval.annotators import PairwiseAnnotator
                from alpaca_eval.decoders import openai as openai_decoder
        except Exception as exc:  # ImportError, or pkg_resources missing with setuptools>=81
            raise TapirError(
                f"judge_mode reference needs alpaca_eval ({type(exc).__name__}: {exc}); "
                "pip install alpaca-eval==0.6.6 'setuptools<81' (the bench extra), or use judge_mode robust"
            ) from None
        finally:
            root.setLevel(level)
        try:
            with _quiet():
                pool = PairwiseAnnotator(annotators_config=name, seed=seed, caching_path=None)
        except Exception as exc:
            raise TapirError(f"alpaca_eval annotator config {name!r} could not be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
        if len(pool.annotators) != 1:
            raise TapirError(f"alpaca_eval annotator config {name!r} holds {len(pool.annotators)} annotators; "
                             "reference mode supports configs with one")
        self.name = name
        self.seed = seed
        self.pool = pool
        self.config_path = str(pool.annotators_config)
        self.single = next(iter(pool.annotators.values()))
        if self.single.batch_size != 1:
            raise TapirError(f"alpaca_eval annotator {name!r} has batch_size {self.single.batch_size}; "
                             "reference mode supports batch_size 1")
        if self.single.fn_completions is not openai_decoder.openai_completions:
            raise TapirError(f"alpaca_eval annotator {name!r} uses {self.single.fn_completions.__name__}; "
                             "reference mode supports openai_completions")
        self._decoder = openai_decoder
        self.body, self._is_strip, self._chatml = self._request_shape()

    # -- the request ---------------------------------------------------------

    def _request_shape(self) -> tuple[dict[str, Any], bool, bool]:
        """What alpaca_eval's openai decoder sends besides the messages, from
        the annotator's completions_kwargs and the decoder's defaults."""
        kwargs = dict(self.single.completions_kwargs)
        decoder = inspect.signature(self._decoder.openai_completions).parameters
        helper = inspect.signature(self._decoder._openai_completion_helper).parameters
        if kwargs.get("tokens_to_favor") or kwargs.get("tokens_to_avoid"):
            raise TapirError(f"alpaca_eval annotator {self.name!r} biases tokens (tokens_to_favor/avoid); "
                             "reference mode does not support it")
        model = kwargs.pop("model_name")
        max_tokens = kwargs.pop("max_tokens", decoder["max_tokens"].default)
        is_strip = kwargs.pop("is_strip", decoder["is_strip"].default)
        for name, p in decoder.items():  # the decoder's own arguments are not sent
            if p.kind is not p.VAR_KEYWORD:
                kwargs.pop(name, None)
        chatml = kwargs.pop("requires_chatml", self._decoder._requires_chatml(model))
        kwargs.pop("is_chat", None)
        if not chatml:
            raise TapirError(f"alpaca_eval annotator {self.name!r} uses a text-completion model ({model}); "
                             "reference mode supports chat models")
        body: dict[str, Any] = {"model": model}
        sent_by_helper = {}
        for name in ("top_p", "temperature"):
            sent_by_helper[name] = kwargs.pop(name, helper[name].default)
        for name, p in helper.items():  # client settings, retries: not sent
            if p.kind is not p.VAR_KEYWORD and name not in ("args",):
                kwargs.pop(name, None)
        body.update(kwargs)  # logprobs, top_logprobs, ...
        body["max_tokens"] = max_tokens
        body.update({k: v for k, v in sent_by_helper.items() if v is not None})
        unknown = sorted(set(body) - _PARAM_KEYS)
        if unknown:
            raise TapirError(f"alpaca_eval annotator {self.name!r} sends {', '.join(unknown)}, which tapir's "
                             "backends cannot express; reference mode does not support it")
        return body, bool(is_strip), bool(chatml)

    @property
    def model_name(self) -> str:
        return str(self.body["model"])

    def params(self) -> GenerationParams:
        """The request parameters as tapir's GenerationParams."""
        b = self.body
        return GenerationParams(
            max_new_tokens=int(b["max_tokens"]),
            temperature=float(b.get("temperature", 1.0)),
            top_p=float(b.get("top_p", 1.0)),
            top_logprobs=int(b.get("top_logprobs") or 0) if b.get("logprobs") else 0,
        )

    def litellm_extra(self) -> dict[str, Any]:
        """What tapir's litellm backend needs in its ``extra`` option to send
        the body alpaca_eval sends: ``top_p`` even when 1 (the backend leaves
        a default top_p out) and no ``seed`` (the backend adds one to every
        sampled request; alpaca_eval sends none)."""
        extra: dict[str, Any] = {"seed": None}
        if "top_p" in self.body:
            extra["top_p"] = self.body["top_p"]
        return extra

    def messages(self, prompt: str) -> list[dict[str, Any]]:
        from alpaca_eval import utils

        return utils.prompt_to_chatml(prompt.strip() if self._is_strip else prompt)

    def plan(self, pairs: Sequence[Pair]) -> list[Planned]:
        """Which pairs are swapped and the messages sent for each, in the
        order given."""
        import pandas as pd

        if not pairs:
            return []
        df = pd.DataFrame(
            {"instruction": [str(p.instruction) for p in pairs], "output_1": [str(p.output_1) for p in pairs],
             "output_2": [str(p.output_2) for p in pairs]},
            index=[p.key for p in pairs],
        )
        with _quiet():
            pre = self.single._preprocess(df.copy())
            prompts, pre = self.single._make_prompts(pre)
        column = self._switch_column()
        by_key = {key: (bool(pre.loc[key, column]), prompt) for key, prompt in zip(pre.index, prompts)}
        out = []
        for p in pairs:
            swapped, prompt = by_key[p.key]
            same = p.output_1 == p.output_2
            out.append(Planned(p.key, swapped, None if same else self.messages(prompt)))
        return out

    def _switch_column(self) -> str:
        from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

        for processor in self.single.processors:
            if isinstance(processor, RandomSwitchTwoColumnsProcessor):
                return processor._switch_column
        raise TapirError(f"alpaca_eval annotator {self.name!r} does not randomise the output order")

    # -- the reply -----------------------------------------------------------

    @staticmethod
    def openai_choice(completion: Completion) -> dict[str, Any]:
        """The reply as the OpenAI choice dict alpaca_eval's parser reads."""
        logprobs = None
        if completion.logprobs:
            logprobs = {"content": [
                {"token": e.token, "logprob": e.logprob,
                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in (e.top or [])]}
                for e in completion.logprobs
            ]}
        return {"text": completion.text, "logprobs": logprobs, "message": {"role": "assistant",
                                                                           "content": completion.text}}

    def parse(self, completion: Completion) -> Verdict:
        """alpaca_eval's preference for the order shown, or why there is none."""
        if completion.error is not None:
            return Verdict(None, f"api_error: {completion.error}")
        with _quiet():
            [value], _ = self.single._parse_completions([self.openai_choice(completion)])
        if value is None:
            if not completion.logprobs:
                return Verdict(None, "no_logprobs: the judge's reply has no logprobs (alpaca_eval's parser needs "
                                    "them): serve the judge where logprobs work (OpenAI, vLLM), or set judge_mode: "
                                    "robust to read verdicts from the text")
            return Verdict(None, "parser_error: alpaca_eval's parser rejected the reply")
        value = float(value)
        if math.isnan(value):
            tokens = [t for e in completion.logprobs or [] for t, _ in (e.top or [])]
            verdicts = self.verdict_tokens()
            return Verdict(None, f"no_verdict_token: none of {', '.join(verdicts)} among the top logprobs "
                                 f"{tokens[:8]!r}")
        return Verdict(value)

    def verdict_tokens(self) -> list[str]:
        kw = self.single.fn_completion_parser.keywords if hasattr(self.single.fn_completion_parser, "keywords") else {}
        tokens = list(kw.get("denominator_tokens") or [])
        if kw.get("numerator_token") and kw["numerator_token"] not in tokens:
            tokens.insert(0, kw["numerator_token"])
        return tokens

    def unswap(self, rows: Sequence[tuple[str, bool, float]]) -> dict[str, float]:
        """``{key: preference}`` with the swap undone by alpaca_eval's own
        postprocessing, from (key, swapped, preference as shown)."""
        import pandas as pd

        if not rows:
            return {}
        column = self._switch_column()
        df = pd.DataFrame({"instruction": "", "output_1": "", "output_2": "",
                           self.single.annotation_column: [float(r[2]) for r in rows],
                           column: [bool(r[1]) for r in rows]}, index=[r[0] for r in rows])
        with _quiet():
            out = self.single._postprocess(df)
        return {key: float(v) for key, v in out[self.single.annotation_column].items()}

    def describe(self) -> dict[str, Any]:
        return {"annotator": self.name, "package": f"alpaca_eval=={alpaca_eval_version()}", "seed": self.seed,
                "request": dict(self.body)}
