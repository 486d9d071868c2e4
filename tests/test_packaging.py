"""The package declares ranges; constraints.txt locks the set the demo and CI run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        reqs += [r for r in items if not r.startswith("tapir-distill")]
    return reqs


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_heavy_dependencies_are_ranges_not_exact_pins():
    reqs = {_name(r): r for r in _pyproject_requirements()}
    for name in ("torch", "litellm", "transformers", "lm-eval", "alpaca-eval"):
        assert "==" not in reqs[name], f"pyproject pins {reqs[name]!r}: declare a range, lock in constraints.txt"


def test_constraints_lock_every_declared_dependency():
    pins = _constraints()
    missing = [r for r in _pyproject_requirements()
               if _name(r) not in pins and _name(r) not in ("vllm", "trl")]  # GPU / optional extras
    assert not missing, f"constraints.txt has no pin for {missing}"
    assert pins["torch"] == "2.13.0" and pins["litellm"] == "1.110.2"


def test_make_and_tox_install_from_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c constraints.txt") >= 3
    assert "constraints.txt" in (ROOT / "tox.ini").read_text()
