"""The TAPIR stages, one module each; :data:`BUILTIN` maps stage names to
their classes. Plugins add stages through the ``register_stages`` hook."""

from __future__ import annotations

from tapir.pipeline.stages.answers import StudentAnswers, TeacherAnswers
from tapir.pipeline.stages.benchmarks import Benchmarks, BenchmarksBase
from tapir.pipeline.stages.classify import Classify
from tapir.pipeline.stages.evaluate import Evaluate, EvaluateBase, HeldoutAnswers
from tapir.pipeline.stages.expand import Expand
from tapir.pipeline.stages.export import Export
from tapir.pipeline.stages.ingest import Ingest
from tapir.pipeline.stages.judge import JudgeMFD
from tapir.pipeline.stages.resample import Resample
from tapir.pipeline.stages.rewrite import Rewrite
from tapir.pipeline.stages.seed_cut import SeedCut
from tapir.pipeline.stages.train import Train

BUILTIN = {
    cls.name: cls
    for cls in (Ingest, TeacherAnswers, Train, StudentAnswers, JudgeMFD, SeedCut, Classify, Resample, Expand,
                Rewrite, Export, HeldoutAnswers, Evaluate, EvaluateBase, Benchmarks, BenchmarksBase)
}
