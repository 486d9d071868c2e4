"""tapir.config is a package (schema, loading, validation, paths): every name
imported from ``tapir.config`` anywhere in the project still is, reading a
config's shape loads no pipeline module, and the stage names of
``failures.max_failure_rate`` are checked with the other references."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = {
    "name": "t",
    "data": {"path": "data.jsonl"},
    "teacher": {"name": "gpt", "model": {"model": "fake:t"}},
    "student": {"model": "fake:s"},
    "judge": {"name": "pairwise", "model": {"model": "fake:j"}},
    "classifier": {"name": "llm", "model": {"model": "fake:c"}},
}


def test_every_name_imported_from_tapir_config_is_there():
    import tapir.config

    wanted: dict[str, str] = {}
    for folder in ("tapir", "plugins", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "tapir.config" and not node.level:
                    wanted.update({a.name: str(path.relative_to(ROOT)) for a in node.names})
    assert {"PipelineConfig", "load_config", "apply_overrides", "read_yaml"} <= set(wanted)
    missing = {name: where for name, where in wanted.items() if not hasattr(tapir.config, name)}
    assert missing == {}


def test_parsing_the_shape_loads_no_pipeline_module():
    code = ("import json, sys; from tapir.config import parse; "
            f"c = parse({{**{MINIMAL!r}, 'failures': {{'max_failure_rate': {{'judge': 0.5}}}}}}); "
            "print(c.failures.max_failure_rate, sorted(m for m in sys.modules if m.startswith('tapir.pipeline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'judge': 0.5} []"


def test_an_unknown_stage_is_a_reference_problem(tmp_path):
    from tapir.config import parse
    from tapir.config.validation import check_pipeline_references, stage_problems

    config = parse({**MINIMAL, "failures": {"max_failure_rate": {"teacher_answer": 0.1, "judge": 0.2}}})
    (problem,) = stage_problems(config, "c.yaml")
    assert problem.startswith("c.yaml: 'failures.max_failure_rate': Value error, unknown stage 'teacher_answer'. "
                              "Did you mean 'teacher_answers'? Stages: ")
    assert problem in check_pipeline_references(config, tmp_path, "c.yaml")
