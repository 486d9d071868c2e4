"""What makes a config wrong, said in one message each: pydantic's
errors as the user wrote the keys (:func:`format_validation_error`, worded
by :mod:`tapir.validation_messages`), and the
references a config makes (plugin, model and stage names, files) checked
against what is installed (:func:`check_pipeline_references`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from pydantic import BaseModel, ValidationError

from tapir.config.paths import resolve_path
from tapir.config.schema import ModelRef, PipelineConfig
from tapir.errors import TapirError
from tapir.validation_messages import KEYS, problems


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """Every problem in ``exc`` as a line naming ``source`` and the key
    (tapir.validation_messages, the formatter components' options use too)."""
    return "\n".join(problems(exc, model, source, KEYS))


def check_pipeline_references(config: PipelineConfig, base: Path, source: str) -> list[str]:
    """Plugin names, model ids and files named by the config must exist."""
    from tapir import models
    from tapir.plugins import registry

    reg = registry()
    problems: list[str] = []

    def check_component(role: str, key: str, name: str):
        table = reg.by_role[role]
        if name not in table:
            allowed = ", ".join(sorted(table)) or "none installed"
            problems.append(f"{source}: '{key}': unknown {role[:-1]} '{name}'. Available: {allowed}")
        elif not table[name].available:
            problems.append(f"{source}: '{key}': {role[:-1]} '{name}' is unavailable: {table[name].reason}")

    def check_model(key: str, ref: ModelRef | None):
        if ref is None:
            return
        try:
            spec = models.resolve(ref.model, ref.options)
        except TapirError as exc:
            problems.append(f"{source}: '{key}.model': {exc}")
            return
        check_component("backends", f"{key}.model", spec.backend)

    data = config.data
    if not data.path and not data.hf_dataset:
        problems.append(f"{source}: 'data': give 'path' (a JSONL/JSON/CSV/parquet file) or 'hf_dataset'")
    if data.path and not resolve_path(data.path, base).exists():
        problems.append(f"{source}: 'data.path': file not found: {data.path} (relative paths are read from {base})")
    check_component("teachers", "teacher.name", config.teacher.name)
    check_model("teacher", config.teacher.model)
    check_model("student", config.student)
    check_component("judges", "judge.name", config.judge.name)
    check_model("judge", config.judge.model)
    check_component("classifiers", "classifier.name", config.classifier.name)
    check_model("classifier", config.classifier.model)
    if config.rewriter is not None:
        check_component("rewriters", "rewriter.name", config.rewriter.name)
        check_model("rewriter", config.rewriter.model)
    check_component("trainers", "trainer.name", config.trainer.name)
    problems += stage_problems(config, source)
    if isinstance(config.resample.weights, dict):
        from tapir.tasks import TASK_TYPES

        for label in config.resample.weights:
            if label not in TASK_TYPES:
                problems.append(
                    f"{source}: 'resample.weights.{label}': unknown task type. Allowed: {', '.join(TASK_TYPES)}"
                )
    return problems


def stage_problems(config: PipelineConfig, source: str) -> list[str]:
    """Keys of ``failures.max_failure_rate`` are stage names, built-in or a
    plugin's (the recipe's stage table): a typo would be a threshold nobody
    reads."""
    from tapir.pipeline.recipe import stage_table

    known = sorted(stage_table())
    problems: list[str] = []
    for key in config.failures.max_failure_rate:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"{source}: 'failures.max_failure_rate': Value error, unknown stage '{key}'.{hint} "
                            f"Stages: {', '.join(known)}")
    return problems
