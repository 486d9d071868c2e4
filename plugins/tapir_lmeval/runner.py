"""The ``lmeval`` evaluator: lm-eval tasks through ``lm_eval.simple_evaluate``.

Options (``tapir bench run lmeval --model M -o key=value``):

``preset``
    ``leaderboard-v1`` (ARC-Challenge 25-shot, HellaSwag 10, MMLU 5,
    TruthfulQA mc2 0, Winogrande 5, GSM8K 5), ``leaderboard-v1-core`` (the
    first four) or ``leaderboard`` (lm-eval's v2 group).
``tasks``
    lm-eval task/group names or local task YAML paths (list or comma string);
    preset names are expanded here too.
``num_fewshot``, ``limit``, ``apply_chat_template``, ``fewshot_as_multiturn``,
``system_instruction``, ``gen_kwargs``, ``bootstrap_iters``, ``random_seed``
    passed to ``simple_evaluate`` (``num_fewshot`` overrides a preset's counts).
``batch_size`` (default 8), ``max_batch_size``, ``device`` (cuda when
available, else cpu), ``dtype`` (float32 on cpu), ``backend`` (hf|vllm),
``model_args`` (extra lm-eval model arguments)
    how the model runs.
``include_path``
    extra folders of task YAMLs.
``use_cache`` (default true), ``output_dir``, ``log_samples``
    lm-eval's request cache (a sqlite file per run, so a re-run after a crash
    recomputes nothing it already scored), where it and ``results.json`` go
    (default ``<db folder>/tapir-out/bench/<run_id>``), and whether to write
    per-sample JSONL files there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tapir.errors import TapirError

OPTIONS = (
    "preset", "tasks", "num_fewshot", "limit", "apply_chat_template", "fewshot_as_multiturn",
    "system_instruction", "gen_kwargs", "bootstrap_iters", "random_seed", "batch_size", "max_batch_size",
    "device", "dtype", "backend", "model_args", "include_path", "use_cache", "output_dir", "log_samples",
    "confirm_run_unsafe_code",
)
DEFAULT_BATCH_SIZE = 8


def output_dir(store: Any, run_id: str, options: dict[str, Any]) -> Path:
    """Where the request cache, results.json and samples go for this run."""
    if options.get("output_dir"):
        base = Path(options["output_dir"]).expanduser()
    elif getattr(store, "path", None):
        base = Path(store.path).resolve().parent / "tapir-out" / "bench" / run_id
    else:
        base = Path(tempfile.gettempdir()) / "tapir-bench" / run_id
    base.mkdir(parents=True, exist_ok=True)
    return base


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _chat_template(value: Any) -> bool | str:
    """on/off words and booleans -> bool; any other string names a chat template."""
    words = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
    if isinstance(value, str) and value.strip().lower() not in words:
        return value
    return _flag(value)


def evaluate_kwargs(options: dict[str, Any], cache_path: Path | None) -> dict[str, Any]:
    """Keyword arguments for ``simple_evaluate`` besides model and tasks."""
    chat = options.get("apply_chat_template", False)
    kwargs: dict[str, Any] = {
        "batch_size": options.get("batch_size", DEFAULT_BATCH_SIZE),
        "num_fewshot": options.get("num_fewshot"),
        "limit": options.get("limit"),
        "apply_chat_template": _chat_template(chat),
        "use_cache": str(cache_path) if cache_path else None,
        "log_samples": _flag(options.get("log_samples", False)),
    }
    for key in ("max_batch_size", "system_instruction", "gen_kwargs", "bootstrap_iters", "random_seed"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if options.get("fewshot_as_multiturn") is not None:
        kwargs["fewshot_as_multiturn"] = _flag(options["fewshot_as_multiturn"])
    if options.get("confirm_run_unsafe_code") is not None:
        kwargs["confirm_run_unsafe_code"] = _flag(options["confirm_run_unsafe_code"])
    return kwargs


def _write_outputs(out: Path, results: dict[str, Any]) -> None:
    samples = results.pop("samples", None) or {}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for task, docs in samples.items():
        with open(out / f"samples_{task}.jsonl", "w") as f:
            for doc in docs:
                f.write(json.dumps(doc, default=str) + "\n")


class LMEval:
    """Evaluator ``lmeval``: see the module docstring for its options."""

    name = "lmeval"

    def __init__(self, **defaults: Any):
        self.defaults = defaults
        self.last_results: dict[str, Any] | None = None  # lm-eval's results dict of the last run

    def run(self, model: str, store: Any, *, run_id: str, **options: Any) -> list[dict[str, Any]]:
        from tapir_lmeval.models import lm_spec
        from tapir_lmeval.presets import primary_metrics
        from tapir_lmeval.results import rows_from_results
        from tapir_lmeval.tasks import build_tasks, task_specs

        opts = {**self.defaults, **options}
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise TapirError(f"unknown lmeval option(s) {', '.join(unknown)}. Options: {', '.join(OPTIONS)}")
        specs, presets = task_specs(opts)
        lm = lm_spec(model, opts)
        out = output_dir(store, run_id, opts)
        cache = out / "lm-eval-cache" if _flag(opts.get("use_cache", True)) else None
        kwargs = evaluate_kwargs(opts, cache)

        import lm_eval

        tm, objects, primary = build_tasks(specs, opts.get("include_path"), metadata=dict(lm.model_args))
        for preset in presets:
            primary.update(primary_metrics(preset))
        results = lm_eval.simple_evaluate(
            model=lm.model_type, model_args=lm.model_args, tasks=objects, task_manager=tm, device=lm.device,
            **kwargs,
        )
        if results is None:  # not rank 0 in a distributed launch
            return []
        _write_outputs(out, results)
        self.last_results = results
        settings = {
            "preset": ",".join(presets) or None,
            "apply_chat_template": kwargs["apply_chat_template"],
            "fewshot_as_multiturn": kwargs.get("fewshot_as_multiturn"),
            "system_instruction": kwargs.get("system_instruction"),
            "backend": lm.model_type,
            "model_source": lm.source,
            "output_dir": str(out),
        }
        return rows_from_results(results, primary, settings)
