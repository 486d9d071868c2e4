"""The ``alpacaeval`` evaluator's options (``-o KEY=VALUE``; ``tapir plugins
alpacaeval`` lists them) and what they imply: the annotator (reference
mode), the judge model, the robust judge plugin's options and the judge
model's backend options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

import tapir.options
from tapir.errors import TapirError
from tapir.models import resolve
from tapir.options import comma_list, option

from tapir_alpacaeval.data import DEFAULT_CONFIG

DEFAULT_JUDGE_MODEL = "openai/gpt-4-1106-preview"  # robust mode; reference mode reads the annotator's


def _ids(value: Any) -> Any:
    """instruction_ids as a list of indices: ``[3, 5]``, ``"3,5"``, ``["alpaca-3", 5]``."""
    if value is None or isinstance(value, list) and not value:
        return None if value is None else []
    if isinstance(value, (int, str)):
        value = comma_list(str(value)) or []
    out = []
    for v in value:
        text = str(v).strip()
        if text.startswith("alpaca-"):
            text = text[len("alpaca-"):]
        try:
            out.append(int(text))
        except ValueError:
            raise ValueError(f"{v!r} is not an instruction index (0, 1, ... or alpaca-<index>)") from None
    return out


class Options(tapir.options.Options):
    judge_mode: Literal["reference", "robust"] = option(
        "reference", "reference: alpaca_eval's own annotator, parser and metrics; robust: tapir's lenient "
                     "preference judge with re-asks")
    data_path: str | None = option(None, "local JSON/JSONL with instruction, output (reference), generator, "
                                         "dataset; default: the hub")
    hub_config: str = option(DEFAULT_CONFIG, "config of tatsu-lab/alpaca_eval on the hub")
    limit: int | None = option(None, "only the first N instructions (of instruction_ids, if given)", ge=1)
    instruction_ids: list[int] | None = option(
        None, "only these instructions: indices in the set (3,5 or alpaca-3,alpaca-5)")
    annotator: str = option("weighted_alpaca_eval_gpt4_turbo",
                            "reference mode: alpaca_eval annotator config (prompt, parameters, parser)")
    judge: str = option("preference", "robust mode: judge plugin")
    judge_model: str | None = option(
        None, "judge model id (default: openai/ + the annotator's model, gpt-4-1106-preview)")
    judge_options: dict[str, Any] = option(lambda: {}, "backend options of the judge model, e.g. "
                                                       "{\"api_base\": ...}", factory=True)
    judge_args: dict[str, Any] = option(lambda: {}, "robust mode: options of the judge plugin, e.g. "
                                                    "{\"top_logprobs\": 5}", factory=True)
    seed: int = option(0, "reference: alpaca_eval's annotator seed (its default 0) for the order swap; "
                          "robust: seed of tapir's order hash")
    max_new_tokens: int = option(1024, "output length limit of the model", ge=1)
    system_prompt: str | None = option(None, "system message for the model (default none)")
    model_options: dict[str, Any] = option(lambda: {}, "backend options of the model, e.g. "
                                                       "{\"batch_size\": 8}", factory=True)
    lc_glm: Literal["auto", "length_controlled_v1", "length_controlled_minimal"] = option(
        "auto", "auto: length_controlled_v1 for the full standard set, length_controlled_minimal otherwise")
    retry_failed: bool = option(True, "judge again, on a re-run, the instructions whose judgment failed")

    @field_validator("instruction_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: Any) -> Any:
        return _ids(value)


def annotator_of(options: Options):
    """Reference mode's annotator: alpaca_eval's config, read from the installed package."""
    from tapir_alpacaeval.annotator import ReferenceAnnotator

    return ReferenceAnnotator(options.annotator, seed=options.seed)


def judge_model_of(options: Options, annotator=None) -> str:
    """The judge model: ``judge_model``, else the annotator's (reference mode), else the default."""
    if options.judge_model:
        return options.judge_model
    return f"openai/{annotator.model_name}" if annotator is not None else DEFAULT_JUDGE_MODEL


def robust_judge_args(options: Options) -> dict[str, Any]:
    """Robust mode: the judge plugin's options (a preference judge keeps the order it is given)."""
    args = dict(options.judge_args)
    if options.judge == "preference":
        args.setdefault("order", "fixed")  # this runner randomises the order itself
    return args


def judge_backend_options(options: Options, annotator=None) -> dict[str, Any] | None:
    """The judge's backend options; in reference mode a litellm judge also
    gets what it needs to send alpaca_eval's exact body."""
    backend = dict(options.judge_options)
    if annotator is not None:
        try:
            spec = resolve(judge_model_of(options, annotator), backend)
        except TapirError:
            spec = None
        if spec is not None and spec.backend == "litellm":
            backend["extra"] = {**annotator.litellm_extra(), **(backend.get("extra") or {})}
    return backend or None
