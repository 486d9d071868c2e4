"""YAML config -> validated, typed objects.

Every mistake becomes one :class:`~tapir.errors.ConfigError` naming the file,
the key and what is allowed, raised before anything is written. Validation is
in three layers: YAML syntax, shape and types (pydantic, unknown keys
forbidden), then references (plugin, model and stage names, files) checked
against what is installed.

The package holds one thing per module: :mod:`~tapir.config.schema` (the
sections and their keys), :mod:`~tapir.config.loading` (YAML, ``--set``),
:mod:`~tapir.config.validation` (error messages, references) and
:mod:`~tapir.config.paths` (where relative paths are read from). Code inside
tapir imports from those modules; ``from tapir.config import X`` is for
everyone else.
"""

from tapir.config.loading import apply_overrides, load_config, parse, read_yaml
from tapir.config.paths import config_base, resolve_path
from tapir.config.schema import (
    AddStage,
    BenchmarkRef,
    BudgetConfig,
    CurriculumConfig,
    DataConfig,
    EvaluationConfig,
    ExpansionConfig,
    ExportConfig,
    FailuresConfig,
    Generation,
    HeldoutConfig,
    MFDConfig,
    ModelRef,
    PipelineConfig,
    PushToHub,
    RecipeConfig,
    ResampleConfig,
    RoleConfig,
    Section,
    ServeConfig,
    StudentConfig,
    StudyTag,
    TrainerConfig,
    TruncationConfig,
)
from tapir.config.validation import check_pipeline_references, format_validation_error, stage_problems

__all__ = [
    "AddStage", "BenchmarkRef", "BudgetConfig", "CurriculumConfig", "DataConfig", "EvaluationConfig",
    "ExpansionConfig", "ExportConfig", "FailuresConfig", "Generation", "HeldoutConfig", "MFDConfig", "ModelRef",
    "PipelineConfig", "PushToHub", "RecipeConfig", "ResampleConfig", "RoleConfig", "Section", "ServeConfig",
    "StudentConfig", "StudyTag", "TrainerConfig", "TruncationConfig", "apply_overrides", "check_pipeline_references",
    "config_base", "format_validation_error", "load_config", "parse", "read_yaml", "resolve_path", "stage_problems",
]
