"""evaluation.heldout.max_new_tokens: the held-out answers are asked at that
length (the dry run prices that length), and leaving it unset keeps the stage
keys of earlier runs."""

from __future__ import annotations

import json

import pytest
import sqlite_utils
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, SpyPlugin, write_config

from tapir.config.schema import HeldoutConfig
from tapir.pipeline.reads import config_value


@pytest.fixture
def cli_plugins():
    return [(ScriptPlugin(), "test-script"), (SpyPlugin(), "test-spy")]


def _heldout_params(db):
    store = sqlite_utils.Database(db)
    return [json.loads(p) for (p,) in store.execute(
        "select c.params from llm_calls c join stages s on s.key = c.stage_key where s.name = 'heldout_answers'")]


def test_heldout_answers_are_asked_at_their_own_length(tmp_path, tiny_model, cli):
    heldout = {"heldout": {"path": str(SEED_DATA), "skip": 16, "limit": 3, "max_new_tokens": 7}}
    config = write_config(tmp_path, tiny_model, curriculum={"rounds": 1, "expand_per_round": [2]},
                          evaluation=heldout)
    db = tmp_path / "t.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "distill", str(config)])
    assert result.exit_code == 0, result.output
    params = _heldout_params(db)
    assert len(params) == 3
    assert {p["max_new_tokens"] for p in params} == {7}


def test_unset_length_leaves_the_stage_key_as_before():
    unset = HeldoutConfig(path="h.jsonl", skip=2, limit=4)
    assert config_value({"heldout": unset}, "heldout") == {"path": "h.jsonl", "skip": 2, "limit": 4}
    short = HeldoutConfig(path="h.jsonl", skip=2, limit=4, max_new_tokens=64)
    assert config_value({"heldout": short}, "heldout")["max_new_tokens"] == 64
