"""Shared fixtures. Every test runs offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The test helpers (tapir_testing: the local OpenAI-compatible server, the tiny
# model) live in tests/support, outside the runtime package.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tapir.plugins import get_plugin_manager, reset_plugin_manager  # noqa: E402
from tapir.store import open_store  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny random Llama folder (tokenizer trained locally)."""
    from tapir_testing.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "test.db")
    yield s
    s.close()


@pytest.fixture
def pm():
    """A fresh plugin manager; forgotten again after the test."""
    reset_plugin_manager()
    manager = get_plugin_manager()
    yield manager
    reset_plugin_manager()


@pytest.fixture
def register_plugin(pm):
    """Register an in-process plugin object for one test."""
    registered = []

    def _register(plugin, name):
        pm.register(plugin, name=name)
        registered.append(name)
        return plugin

    yield _register


@pytest.fixture
def cli_plugins():
    """In-process plugins, ``[(plugin, name), ...]``, that :func:`cli`
    registers before it adds the commands. A test file that needs its own
    (scripted backends, fake benchmarks) overrides this fixture."""
    return []


@pytest.fixture
def cli(pm, cli_plugins, monkeypatch, tmp_path):
    """The tapir click group with every command added (plugins' too), run in
    ``tmp_path`` with ``TAPIR_DB`` unset and tapir's progress quiet; the
    commands added for the test are taken out again after it."""
    from tapir.cli import _add_commands, cli as group

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPIR_DB", raising=False)
    monkeypatch.setenv("TAPIR_QUIET", "1")
    for plugin, name in cli_plugins:
        pm.register(plugin, name=name)
    _add_commands()
    added = set(group.commands)
    yield group
    for name in set(group.commands) - added:
        group.commands.pop(name)
