"""The ``lmeval`` evaluator: lm-eval tasks through ``lm_eval.simple_evaluate``.

Options (``tapir bench run lmeval --model M -o key=value``) are declared in
:class:`LMEval.Options` (``tapir plugins lmeval`` lists them):

``preset``
    ``leaderboard-v1`` (ARC-Challenge 25-shot, HellaSwag 10, MMLU 5,
    TruthfulQA mc2 0, Winogrande 5, GSM8K 5), ``leaderboard-v1-core`` (the
    first four) or ``leaderboard`` (lm-eval's v2 group).
``tasks``
    lm-eval task/group names or local task YAML paths (list or comma string);
    preset names are expanded here too.
``limit``, ``samples``
    a subset: documents per task (or a fraction), or document indices per
    task (``{task: [0, 1]}``); recorded in every row's ``meta.subset``.
``num_fewshot``, ``apply_chat_template``, ``fewshot_as_multiturn``,
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
    per-sample JSONL files there. The cache is per weights: a run's id
    includes a local checkpoint's weights fingerprint, and in a shared
    ``output_dir`` the cache file is named by it (:func:`cache_name`).

``preflight(model)`` resolves the weights and builds the tasks (unknown task
names, unreadable data) before tapir writes a run; ``run(..., force=True)``
deletes the run's request cache, so every request is scored again. Other
libraries' logs, warnings and loading bars (and lm-eval's ``fatal: not a git
repository``) are silenced unless ``TAPIR_VERBOSE`` is set (``tapir bench -v``);
lm-eval's own request bars (counts, rate, ETA) stay.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from tapir.errors import TapirError
from tapir.options import CommaList, Options, option

if TYPE_CHECKING:
    from tapir.store.db import Store

DEFAULT_BATCH_SIZE = 8


def output_dir(store: "Store", run_id: str, options: dict[str, Any]) -> Path:
    """Where the request cache, results.json and samples go for this run:
    options.output_dir, else beside the database (an in-memory store has no
    path: then the temp folder)."""
    if options.get("output_dir"):
        base = Path(options["output_dir"]).expanduser()
    elif store.path is not None:
        base = Path(store.path).resolve().parent / "tapir-out" / "bench" / run_id
    else:
        base = Path(tempfile.gettempdir()) / "tapir-bench" / run_id
    base.mkdir(parents=True, exist_ok=True)
    return base


def cache_name(model: str, options: dict[str, Any]) -> str:
    """lm-eval's request cache file name (lm-eval adds ``_rank<N>.db``). The
    default output folder is the run's, and a run's id includes the
    checkpoint's weights, so the cache is per weights. A shared
    ``output_dir`` gets one cache per weights (or per model id) in it: a
    checkpoint retrained in place never reads the old weights' answers."""
    if not options.get("output_dir"):
        return "lm-eval-cache"
    import hashlib

    from tapir.benchmodel import weights_fingerprint

    identity = weights_fingerprint(model) or model
    return "lm-eval-cache-" + hashlib.sha256(identity.encode()).hexdigest()[:12]


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
        "batch_size": options.get("batch_size") or DEFAULT_BATCH_SIZE,
        "num_fewshot": options.get("num_fewshot"),
        "limit": options.get("limit"),
        "apply_chat_template": _chat_template(chat),
        "use_cache": str(cache_path) if cache_path else None,
        "log_samples": _flag(options.get("log_samples", False)),
    }
    for key in ("samples", "max_batch_size", "system_instruction", "gen_kwargs", "bootstrap_iters", "random_seed"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if options.get("fewshot_as_multiturn") is not None:
        kwargs["fewshot_as_multiturn"] = _flag(options["fewshot_as_multiturn"])
    if options.get("confirm_run_unsafe_code") is not None:
        kwargs["confirm_run_unsafe_code"] = _flag(options["confirm_run_unsafe_code"])
    return kwargs


def subset(options: dict[str, Any]) -> str | None:
    """``meta.subset``: ``limit=N`` / ``samples=task:0,1``, None for every document."""
    from tapir.bench import subset_label

    return subset_label({k: options.get(k) for k in ("limit", "samples")})


def _write_outputs(out: Path, results: dict[str, Any]) -> None:
    samples = results.pop("samples", None) or {}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for task, docs in samples.items():
        with open(out / f"samples_{task}.jsonl", "w") as f:
            for doc in docs:
                f.write(json.dumps(doc, default=str) + "\n")


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without git's ``fatal: not a git repository`` on stderr."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


@contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Silence lm-eval's git noise, INFO logs, warnings and transformers'/datasets'
    loading bars for the duration (everything is restored after)."""
    if verbose:
        yield
        return
    import logging
    import warnings

    import lm_eval.evaluator as evaluator_mod

    with ExitStack() as stack:
        saved_hash = evaluator_mod.get_git_commit_hash
        evaluator_mod.get_git_commit_hash = _quiet_git_hash
        stack.callback(setattr, evaluator_mod, "get_git_commit_hash", saved_hash)
        for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate"):
            logger = logging.getLogger(name)
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        try:
            from transformers.utils import logging as hf_logging

            was_enabled = hf_logging.is_progress_bar_enabled()
            level = hf_logging.get_verbosity()
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            stack.callback(hf_logging.set_verbosity, level)
            if was_enabled:
                stack.callback(hf_logging.enable_progress_bar)
        except ImportError:  # pragma: no cover - transformers is lm-eval's dependency
            pass
        try:
            import datasets

            if datasets.utils.logging.is_progress_bar_enabled():
                datasets.utils.logging.disable_progress_bar()
                stack.callback(datasets.utils.logging.enable_progress_bar)
        except (ImportError, AttributeError):  # pragma: no cover
            pass
        yield


def _say(message: str) -> None:
    from tapir.progress import say

    say(message)


class LMEval:
    """Evaluator ``lmeval``: see the module docstring."""

    name = "lmeval"

    class Options(Options):
        preset: CommaList = option(
            None, "leaderboard-v1 | leaderboard-v1-core | leaderboard (a list or comma string for several)")
        tasks: CommaList = option(None, "lm-eval task/group names or local task YAML paths (a list or "
                                               "comma string)")
        num_fewshot: int | None = option(None, "few-shot examples for every task (overrides a preset's)", ge=0)
        limit: int | float | None = option(None, "a subset: documents per task (int) or a fraction (< 1)", gt=0)
        samples: dict[str, list[int]] | None = option(None, "a subset: document indices per task, {task: [0, 1]}")
        apply_chat_template: bool | str = option(False, "format prompts with the model's chat template "
                                                        "(true/false or a template name)")
        fewshot_as_multiturn: bool | None = option(None, "few-shot examples as chat turns (lm-eval's default "
                                                         "with a chat template)")
        system_instruction: str | None = option(None, "system message for every prompt")
        gen_kwargs: str | dict[str, Any] | None = option(None, "generation arguments of generative tasks")
        bootstrap_iters: int | None = option(None, "bootstrap iterations for non-mean stderrs (lm-eval default "
                                                   "100000)", ge=0)
        random_seed: int | None = option(None, "lm-eval's random seed (default 0)")
        batch_size: int | str = option(DEFAULT_BATCH_SIZE, "requests per batch, or auto (GPU)")
        max_batch_size: int | None = option(None, "upper bound for batch_size=auto", ge=1)
        device: str | None = option(None, "cuda when available, else cpu")
        dtype: str | None = option(None, "weights dtype (default float32 on cpu, auto on GPU)")
        backend: Literal["hf", "vllm"] = option("hf", "lm-eval model type")
        model_args: dict[str, Any] = option(lambda: {}, "extra lm-eval model arguments, e.g. {revision: main}",
                                            factory=True)
        include_path: str | list[str] | None = option(None, "extra folders of task YAMLs")
        use_cache: bool = option(True, "lm-eval's request cache in the run's output folder (resume after a crash)")
        output_dir: str | None = option(None, "folder for the request cache, results.json and samples "
                                              "(default <db folder>/tapir-out/bench/<run_id>)")
        log_samples: bool = option(False, "write samples_TASK.jsonl files to the output folder")
        confirm_run_unsafe_code: bool | None = option(None, "allow tasks that execute generated code")

    def __init__(self, options: "LMEval.Options | None" = None):
        self.options = options if options is not None else LMEval.Options()
        self.last_results: dict[str, Any] | None = None  # lm-eval's results dict of the last run
        self._prepared: dict[str, Any] | None = None

    def _opts(self) -> dict[str, Any]:
        return self.options.model_dump()

    # -- before anything is written ---------------------------------------

    def _prepare(self, model: str) -> dict[str, Any]:
        """Weights, task objects and headline metrics for ``model`` (kept for ``run``)."""
        if self._prepared is not None and self._prepared["model"] == model:
            return self._prepared
        from tapir_lmeval.models import lm_spec
        from tapir_lmeval.presets import primary_metrics
        from tapir_lmeval.tasks import build_tasks, task_specs

        opts = self._opts()
        specs, presets = task_specs(opts)
        lm = lm_spec(model, opts)
        started = time.perf_counter()
        _say(f"lmeval: loading {len(specs)} task(s): {', '.join(s.spec for s in specs)}")
        with quiet_libraries(bool(os.environ.get("TAPIR_VERBOSE"))):
            tm, objects, primary = build_tasks(specs, opts.get("include_path"), metadata=dict(lm.model_args))
        for preset in presets:
            primary.update(primary_metrics(preset))
        _say(f"lmeval: {len(objects)} task object(s) ready in {time.perf_counter() - started:.1f}s")
        self._prepared = {"model": model, "lm": lm, "tm": tm, "objects": objects, "primary": primary,
                          "presets": presets}
        return self._prepared

    def preflight(self, model: str) -> list[str]:
        """Problems found without scoring anything: weights not found, vllm
        missing, no or unknown tasks, unreadable task data."""
        try:
            self._prepare(model)
        except TapirError as exc:
            return [f"lmeval: {exc}"]
        except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
            return [f"lmeval: could not load the tasks: {type(exc).__name__}: {exc}"]
        return []

    # -- the run ------------------------------------------------------------

    def run(self, model: str, store: Any, *, run_id: str, force: bool = False) -> list[dict[str, Any]]:
        from tapir_lmeval.results import rows_from_results

        prepared = self._prepare(model)
        self._prepared = None  # task objects are used once
        opts = self._opts()
        lm = prepared["lm"]
        out = output_dir(store, run_id, opts)
        name = cache_name(model, opts)
        if force:
            for old in out.glob(f"{name}_rank*.db"):
                old.unlink()
        cache = out / name if _flag(opts.get("use_cache", True)) else None
        kwargs = evaluate_kwargs(opts, cache)

        import lm_eval

        verbose = bool(os.environ.get("TAPIR_VERBOSE"))
        started = time.perf_counter()
        _say(f"lmeval: scoring {model} ({lm.model_type}, {lm.device}"
             + (f", subset {subset(opts)}" if subset(opts) else "") + "); lm-eval's request bars follow")
        with quiet_libraries(verbose):
            results = lm_eval.simple_evaluate(
                model=lm.model_type, model_args=lm.model_args, tasks=prepared["objects"], task_manager=prepared["tm"],
                device=lm.device, **kwargs,
            )
        if results is None:  # not rank 0 in a distributed launch
            return []
        _say(f"lmeval: scored in {time.perf_counter() - started:.1f}s")
        _write_outputs(out, results)
        self.last_results = results
        settings = {
            "preset": ",".join(prepared["presets"]) or None,
            "apply_chat_template": kwargs["apply_chat_template"],
            "fewshot_as_multiturn": kwargs.get("fewshot_as_multiturn"),
            "system_instruction": kwargs.get("system_instruction"),
            "backend": lm.model_type,
            "model_source": lm.source,
            "output_dir": str(out),
            # the benchmark-row contract (tapir.bench.META_KEYS): lm-eval has no judge and no failures
            "judge": None,
            "judge_mode": "reference",
            "failures": 0,
            "failure_reasons": {},
            "failure_example": None,
            "subset": subset(opts),
        }
        tm = prepared["tm"]
        yaml_dirs = {name: Path(entry.yaml_path).parent for name, entry in tm.task_index.items()
                     if name in results.get("results", {}) and getattr(entry, "yaml_path", None)}
        return rows_from_results(results, prepared["primary"], settings, yaml_dirs)
