"""What a comparison is made of: the models asked for (:class:`ModelRow`),
one benchmark run of one model (:class:`Entry`), a benchmark's section and
the whole :class:`Comparison`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tapir.errors import TapirError

# Benchmarks in this order first, then the rest alphabetically.
BENCHMARK_ORDER = ("mtbench", "alpacaeval", "lmeval")
# Bookkeeping metrics that are not scores: shown only with --all-metrics.
DIAGNOSTIC_METRICS = frozenset({"failures", "baseline_failures"})
# Results that are not model scores (``tapir classifier eval``).
NOT_MODEL_BENCHMARKS = frozenset({"classifier"})
# Options that do not change scores: ignored when matching a student's run with its base's.
NEUTRAL_OPTIONS = frozenset({"batch_size", "max_batch_size", "output_dir", "use_cache", "log_samples", "device",
                             "concurrency"})
MISSING = "?"  # what an old stored run did not record
SEP = " · "  # between the parts of a row's label: backbone · setting · S_r


class UnknownReference(TapirError):
    """A name given to compare is no stored model, run, study or checkpoint."""


def label_for(model: str) -> str:
    """Paths inside the working directory print relative; anything else as is."""
    if os.path.isabs(model):
        try:
            rel = os.path.relpath(model)
        except ValueError:  # pragma: no cover - other drive on Windows
            return model
        if not rel.startswith(".."):
            return rel
    return model


def short_name(model: str) -> str:
    """A model's short name for a label: ``hf:Qwen/Qwen2.5-0.5B`` ->
    ``Qwen2.5-0.5B``, ``/models/smollm2-135m/`` -> ``smollm2-135m``."""
    text = model.rstrip("/\\")
    provider, sep, rest = text.partition(":")
    if sep and "/" not in provider and "\\" not in provider and len(provider) > 1 and rest:
        text = rest  # hf:..., openai/..., a Windows drive letter is kept
    return text.replace("\\", "/").rsplit("/", 1)[-1] or model


@dataclass
class ModelRow:
    model: str  # the key results are stored under
    label: str
    base: str | None = None
    run_id: str | None = None  # training run (or train stage key) of a checkpoint
    round: int | None = None
    is_base: bool = False
    bench_run: str | None = None  # only this benchmark run (the reference was its id)
    setting: str | None = None  # the run's name, or its ablation setting
    run_name: str | None = None  # the training run's name
    train_run: str | None = None  # the training run's id (run_id may be its train stage's key)

    @property
    def backbone(self) -> str | None:
        """Short name of the base model (of the model itself for a base row)."""
        if self.is_base:
            return short_name(self.model)
        return short_name(self.base) if self.base else None

    def relabel(self) -> None:
        """``backbone · setting · S_r`` for a checkpoint, ``backbone · base`` for a base."""
        if self.is_base:
            self.label = f"{self.backbone}{SEP}base"
        elif self.round is not None and self.backbone:
            parts = [self.backbone] + ([self.setting] if self.setting else []) + [f"S{self.round}"]
            self.label = SEP.join(parts)

    def order_key(self) -> tuple:
        """Within a backbone: the base first, then by setting and round."""
        return (not self.is_base, (self.setting or "").lower(), -1 if self.round is None else self.round,
                self.label.lower())


@dataclass
class Entry:
    """One row of a section: one benchmark run of one model."""

    benchmark: str
    model: str
    label: str
    base: str | None
    is_base: bool
    train_run: str | None
    round: int | None
    run_id: str | None  # None: a base placeholder with no run in this benchmark
    status: str = MISSING
    options: dict[str, Any] | None = None
    subset: Any = MISSING
    judge: Any = MISSING
    judge_mode: Any = MISSING
    data_version: Any = MISSING
    template: Any = MISSING  # the prompt template the answers were generated with (name@digest)
    template_warning: Any = MISSING
    readings: Any = MISSING  # how the judgments were read: {method: count} (logprobs, parser, fallback, ...)
    n: int | None = None
    failures: Any = MISSING
    failure_reasons: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    stderr: dict[str, float | None] = field(default_factory=dict)
    delta: dict[str, float | None] = field(default_factory=dict)
    delta_vs: str | None = None  # the base run the delta is against
    delta_note: str | None = None  # why there is no delta
    first_id: int = 0
    backbone: str | None = None
    setting: str | None = None

    @property
    def is_student(self) -> bool:
        return bool(self.base) and not self.is_base


@dataclass
class Section:
    benchmark: str
    columns: list[str]  # "task/metric"
    entries: list[Entry]

    @property
    def has_delta(self) -> bool:
        return any(e.is_student for e in self.entries)


@dataclass
class Comparison:
    sections: list[Section]
    missing: list[str] = field(default_factory=list)  # models asked for that have no results
    classifiers: list[dict[str, Any]] = field(default_factory=list)  # not models, listed apart
    models: list[ModelRow] = field(default_factory=list)  # the rows' order: backbone, setting, round

    @property
    def columns(self) -> list[str]:
        return [f"{s.benchmark}/{c}" for s in self.sections for c in s.columns]

    @property
    def entries(self) -> list[Entry]:
        return [e for s in self.sections for e in s.entries]

    def section(self, benchmark: str) -> Section:
        return next(s for s in self.sections if s.benchmark == benchmark)
