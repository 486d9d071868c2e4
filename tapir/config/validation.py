"""What makes a config wrong, said in one message each: pydantic's
errors as the user wrote the keys (:func:`format_validation_error`), and the
references a config makes (plugin, model and stage names, files) checked
against what is installed (:func:`check_pipeline_references`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tapir.config.paths import resolve_path
from tapir.config.schema import ModelRef, PipelineConfig
from tapir.errors import TapirError


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for 'allowed' lists)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
            None,
        )
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_tag(part: Any) -> bool:
    """A union-branch tag in an error location ('literal[...]', 'dict[str,float]',
    'function-after[...]'), not a key the user wrote."""
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def _merge_union_branches(errors: list[dict]) -> list[dict]:
    """Pydantic reports one error per branch of a union, each under a tag.
    Keep the branches that got past the union's own level (the input had
    their shape, so their errors are the real ones); when none did, merge the
    branches into one error at the union's key: "should be A, or B"."""
    out: list[dict] = []
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        tag_at = next((i for i, p in enumerate(loc) if _is_tag(p)), None)
        if tag_at is None:
            out.append(err)
            continue
        union_loc = loc[:tag_at]
        if union_loc not in groups:
            groups[union_loc] = []
            out.append({"_union": union_loc})
        groups[union_loc].append((tag_at, err))
    merged: list[dict] = []
    for err in out:
        if "_union" not in err:
            merged.append(err)
            continue
        union_loc = err["_union"]
        branches = groups[union_loc]
        deeper = [e for tag_at, e in branches if len(e["loc"]) > tag_at + 1]
        if deeper:
            merged.extend({**e, "loc": tuple(p for p in e["loc"] if not _is_tag(p))} for e in deeper)
            continue
        msgs = list(dict.fromkeys(e["msg"] for _, e in branches))
        msg = msgs[0] + "".join(", or " + m.removeprefix("Input should be ") for m in msgs[1:])
        merged.append({**branches[0][1], "loc": union_loc, "msg": msg})
    return merged


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    seen = set()
    for err in _merge_union_branches(exc.errors()):
        loc = tuple(p for p in err["loc"] if not _is_tag(p))
        # Unions report one error per branch; keep the first per location.
        key = _loc(loc)
        if key in seen:
            continue
        seen.add(key)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            got = err.get("input")
            got_text = f" (got {got!r:.60})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"{source}: '{key}': {err['msg']}{got_text}")
    return "\n".join(lines)


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
