"""The ``mtbench`` evaluator's options (``-o KEY=VALUE``; ``tapir plugins
mtbench`` lists them) and what they imply: the judge plugin, its mode
(``reference``: FastChat's judging; ``robust``: tapir's), the judge key the
judgments are stored under, the subset label and the answer settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

import tapir.options as opt

from tapir_mtbench.answers import AnswerSettings
from tapir_mtbench.data import CATEGORIES

# A dated snapshot, never the moving alias "gpt-4" (FastChat's default): the alias has
# meant gpt-4-0613 since June 2023; docs/benchmarks-mtbench-alpacaeval.md says why this one.
DEFAULT_JUDGE_MODEL = "openai/gpt-4-0613"
SINGLE_JUDGE = "mtbench-single"
# mtbench-single options that change FastChat's request or parser (the judge refuses them in reference mode).
ROBUST_ONLY_JUDGE_ARGS = ("use_logprobs", "score_only", "params")


class Options(opt.Options):
    data_dir: str | None = opt.option(
        None, "folder in FastChat's layout (question.jsonl, reference_answer/); default: an installed copy")
    reference_model: str = opt.option("gpt-4", "reference answer file name under reference_answer/")
    categories: opt.CommaList = opt.option(None, "only these categories (comma-separated); a subset")
    question_ids: opt.CommaList = opt.option(None, "only these question ids (comma-separated); a subset")
    limit: int | None = opt.option(None, "only the first N questions (after the filters above); a subset",
                                   ge=1)
    mode: Literal["single", "pairwise"] = opt.option("single", "single-answer grading or pairwise")
    judge_mode: Literal["reference", "robust"] | None = opt.option(
        None, "'reference' (single mode's default): FastChat's judging and -1 rule; 'robust': tapir's "
        "lenient parser and one re-ask (pairwise mode's only mode)")
    judge: str | None = opt.option(None, "judge plugin (default mtbench-single; pairwise mode: pairwise)")
    judge_model: str = opt.option(DEFAULT_JUDGE_MODEL, "model id of the judge")
    judge_options: opt.JsonDict = opt.option({}, "backend options of the judge model, e.g. {api_base: ...}")
    judge_args: opt.JsonDict = opt.option({}, "options of the judge plugin itself, e.g. {prompts_path: ...}")
    baseline_model: str | None = opt.option(None, "pairwise mode: the model compared against")
    baseline_options: opt.JsonDict = opt.option({}, "pairwise mode: backend options of the baseline model")
    max_new_tokens: int = opt.option(1024, "answer length limit (FastChat's max_new_token)", ge=1)
    seed: int = opt.option(0, "torch seed before each question (FastChat: the choice index, 0)")
    conv_template: str = opt.option(
        "auto", "prompt format: 'auto' (FastChat's template when an adapter knows the model name, else a "
        "local checkpoint's chat template, its training format, else FastChat's one_shot), a FastChat "
        "template name, or 'chat_template' (plain chat messages: the tokenizer's template)")
    system_prompt: str | None = opt.option(None, "replace the template's system message (not FastChat's)")
    model_options: opt.JsonDict = opt.option({}, "backend options of the answering model, e.g. {batch_size: 8}")
    temperatures: dict[str, float] = opt.option(
        {}, "per-category temperature overrides, e.g. {writing: 0.0} (not FastChat's)")
    retry_failed: bool = opt.option(True, "judge again, on a re-run, the answers whose judgment failed")

    _temperatures = field_validator("temperatures", mode="before")(opt.json_object)

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value):
        for c in value or []:
            if c not in CATEGORIES:
                raise ValueError(f"unknown category {c!r} (known: {', '.join(CATEGORIES)})")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.mode == "pairwise" and not self.baseline_model:
            raise ValueError("mode=pairwise needs baseline_model=MODEL (the model compared against)")
        judge = self.judge or ("pairwise" if self.mode == "pairwise" else SINGLE_JUDGE)
        if self.judge_mode == "reference" and (self.mode != "single" or judge != SINGLE_JUDGE):
            raise ValueError("judge_mode=reference is FastChat's single-answer grading: it needs mode=single "
                             f"and judge {SINGLE_JUDGE}; use judge_mode=robust")
        mode_arg = (self.judge_args or {}).get("judge_mode")
        if mode_arg is not None and self.judge_mode is not None and mode_arg != self.judge_mode:
            raise ValueError("judge_args.judge_mode and judge_mode disagree; set judge_mode only")
        robust_only = [k for k in ROBUST_ONLY_JUDGE_ARGS if (self.judge_args or {}).get(k)]
        if robust_only and self.judge_name == SINGLE_JUDGE and self.resolved_judge_mode == "reference":
            raise ValueError(
                f"judge_args {', '.join(robust_only)} change FastChat's judge request or parser, and "
                "judge_mode is reference (FastChat's judging, the default): add -o judge_mode=robust, "
                f"or drop {', '.join(robust_only)}")
        return self

    # -- derived ------------------------------------------------------

    @property
    def judge_name(self) -> str:
        return self.judge or ("pairwise" if self.mode == "pairwise" else SINGLE_JUDGE)

    @property
    def resolved_judge_mode(self) -> str:
        if self.judge_mode is not None:
            return self.judge_mode
        given = (self.judge_args or {}).get("judge_mode")
        if given in ("reference", "robust"):
            return given
        return "reference" if self.mode == "single" and self.judge_name == SINGLE_JUDGE else "robust"

    @property
    def judge_key(self) -> str:
        """The judge column of the stored judgments: plugin and mode, so
        reference and robust verdicts are never read for each other."""
        return f"{self.judge_name}/{self.resolved_judge_mode}"

    @property
    def subset(self) -> str | None:
        parts = []
        if self.categories:
            parts.append("categories=" + ",".join(self.categories))
        if self.question_ids:
            parts.append("question_ids=" + ",".join(self.question_ids))
        if self.limit:
            parts.append(f"limit={self.limit}")
        return " ".join(parts) or None

    def answer_settings(self, model_options: dict[str, Any] | None = None) -> AnswerSettings:
        return AnswerSettings(
            max_new_tokens=self.max_new_tokens, seed=self.seed, conv_template=self.conv_template,
            system_prompt=self.system_prompt,
            model_options=self.model_options if model_options is None else model_options,
            temperatures={k: float(v) for k, v in (self.temperatures or {}).items()},
        )
