"""From the ``preset`` / ``tasks`` options to lm-eval Task and Group objects.

Local task YAMLs are indexed through a ``TaskManager(include_path=...,
include_defaults=False)``; lm-eval's built-in tasks (indexing them costs
~15 s) are only added when a task name is not found locally. A local YAML
whose relative ``data_files`` are not found from the working directory
(lm-eval's rule) is loaded from its own folder, whether it is named by path
or by task name through ``include_path``, so a task folder works from
anywhere.
"""

from __future__ import annotations

import difflib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tapir.errors import TapirError
from tapir.options import comma_list
from tapir_lmeval.presets import PRESETS, preset_names


@dataclass
class TaskSpec:
    spec: str  # lm-eval task/group/tag name, or a YAML path
    num_fewshot: int | None = None  # preset's count; None keeps the task's own
    primary: tuple[str, ...] | None = None  # headline metrics; None: the task's first metric

    @property
    def path(self) -> Path | None:
        p = Path(self.spec).expanduser()
        return p.resolve() if self.spec.endswith((".yaml", ".yml")) and p.is_file() else None


def _as_list(value: Any) -> list[str]:
    if value is None or isinstance(value, (str, list, tuple)):
        return comma_list(value) or []
    raise TapirError(f"lmeval option tasks must be a list or comma-separated string, not {type(value).__name__}")


def task_specs(options: dict[str, Any]) -> tuple[list[TaskSpec], list[str]]:
    """The tasks to run and the presets among them."""
    names = _as_list(options.get("preset")) + _as_list(options.get("tasks"))
    if not names:
        raise TapirError(
            "lmeval needs tasks: -o preset=NAME (one of " + ", ".join(preset_names()) + ") "
            "or -o tasks=[task_or_yaml,...] (any lm-eval task name or local task YAML)"
        )
    specs: list[TaskSpec] = []
    presets = []
    for name in names:
        if name in PRESETS:
            presets.append(name)
            specs.extend(TaskSpec(t.task, t.num_fewshot, t.primary) for t in PRESETS[name])
        elif name.endswith((".yaml", ".yml")) and not Path(name).expanduser().is_file():
            raise TapirError(f"lmeval task file not found: {name}")
        else:
            specs.append(TaskSpec(name))
    return specs, presets


class UnknownTask(TapirError):
    """A task name that the TaskManager at hand does not know."""


def _task_manager(paths: list[str], defaults: bool, metadata: dict | None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=paths or None, include_defaults=defaults, metadata=metadata)


def build_tasks(specs: list[TaskSpec], include_path: Any = None, metadata: dict | None = None):
    """``(task_manager, task objects, headline metrics)``. The TaskManager
    indexes the YAML folders (and extra include paths) only; lm-eval's
    built-in tasks are indexed too when some name is not found there."""
    paths = sorted({str(s.path.parent) for s in specs if s.path})
    for p in _as_list(include_path):
        if not Path(p).expanduser().is_dir():  # else its tasks were reported as unknown lm-eval tasks
            raise TapirError(f"include_path: no folder {p} (relative paths are read from {Path.cwd()}); give the "
                             f"folder that holds your task YAMLs")
    paths += [str(Path(p).expanduser().resolve()) for p in _as_list(include_path)]
    if paths:
        tm = _task_manager(paths, False, metadata)
        if all(s.path or s.spec in tm.all_tasks for s in specs):
            try:
                return (tm, *load_tasks(tm, specs))
            except UnknownTask:  # e.g. a local group over built-in tasks
                pass
    tm = _task_manager(paths, True, metadata)
    return (tm, *load_tasks(tm, specs))


@contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _load(tm, spec: TaskSpec) -> dict[str, Any]:
    """``tm.load`` one spec. A local YAML whose data files are not found from
    the working directory (lm-eval's rule) is loaded again from its own folder."""
    name = spec.spec
    if spec.path is not None:
        # Load a local YAML by the name its (indexed) folder gives it: lm-eval
        # 0.4.13 mis-names a group loaded by path.
        name = next((n for n, e in tm.task_index.items()
                     if e.yaml_path and Path(e.yaml_path).resolve() == spec.path), str(spec.path))
    try:
        return tm.load([name])
    except FileNotFoundError:
        entry = tm.task_index.get(name)
        folder = spec.path.parent if spec.path is not None else (
            Path(entry.yaml_path).parent if entry is not None and getattr(entry, "yaml_path", None) else None)
        if folder is None:
            raise
    with _working_dir(folder):
        return tm.load([name])


def load_tasks(tm, specs: list[TaskSpec]) -> tuple[list[Any], dict[str, tuple[str, ...] | None]]:
    """Build each spec's top-level Task/Group objects (preset few-shot counts
    applied to every leaf task) and map top-level names to headline metrics."""
    from lm_eval.api.group import Group

    objects: list[Any] = []
    primary: dict[str, tuple[str, ...] | None] = {}
    for spec in specs:
        try:
            loaded = _load(tm, spec)
        except KeyError:
            close = difflib.get_close_matches(spec.spec, tm.all_tasks, n=5) or sorted(tm.all_tasks)[:10]
            raise UnknownTask(
                f"unknown lm-eval task '{spec.spec}'. Presets: {', '.join(preset_names())}; "
                f"or a task YAML path; or an lm-eval task such as: {', '.join(close)}"
            ) from None
        children = {c for kids in loaded["group_map"].values() for c in kids}
        tops = [g for name, g in loaded["groups"].items() if name not in children]
        tops += [t for name, t in loaded["tasks"].items() if name not in children]
        if spec.num_fewshot is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=spec.num_fewshot)
        for top in tops:
            primary[top.name if isinstance(top, Group) else top.task_name] = spec.primary
        objects.extend(tops)
    return objects, primary
