"""The student's answers through a server (student.serve): one the user
gives, or one tapir launches for the stage and stops after it; the cache
keeps each checkpoint's answers apart."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import sqlite_utils
from pipeline_helpers import ScriptPlugin, write_config
from tapir_testing.openai_server import OpenAIServer

SUPPORT = Path(__file__).resolve().parent / "support"

SERVER = """
import sys, time
sys.path.insert(0, {support!r})
from tapir_testing.openai_server import OpenAIServer
srv = OpenAIServer(reply=lambda m, b: "served answer to " + m[-1]["content"][:40], port=int(sys.argv[1])).start()
open(sys.argv[2], "w").write("up")
while True:
    time.sleep(1)
"""


def _run(tmp_path, tiny_model, register_plugin, serve):
    from tapir.pipeline.runner import distill

    register_plugin(ScriptPlugin(), "test-script")
    cfg = write_config(tmp_path, tiny_model, trainer={"name": "hf", "options": {"max_steps": 1, "max_length": 64}},
                       curriculum={"rounds": 1, "expand_per_round": [2], "recompute_mfd": True},
                       student={"model": f"hf:{tiny_model}", "options": {"batch_size": 8},
                                "generation": {"max_new_tokens": 8}, "serve": serve})
    return distill(cfg, str(tmp_path / "t.db"))


def test_student_answers_through_a_given_server(tmp_path, tiny_model, register_plugin, monkeypatch):
    monkeypatch.setenv("TAPIR_QUIET", "1")
    with OpenAIServer(reply=lambda m, b: "served: " + m[-1]["content"][:30]) as srv:
        out = _run(tmp_path, tiny_model, register_plugin,
                   {"model": "openai/student", "options": {"api_base": srv.base_url}})
        sent = srv.requests
    db = sqlite_utils.Database(tmp_path / "t.db")
    texts = [r[0] for r in db.execute("select text from responses where role = 'student'")]
    assert len(texts) == 32 and all(t.startswith("served: ") for t in texts)  # 16 items, S0 and S1
    assert sent == 32  # S1's answers were asked again: its weights differ from S0's
    models = {r[0] for r in db.execute("select model from llm_calls where role = 'student'")}
    assert len(models) == 2 and all("|weights:" in m for m in models)
    assert out.info("student_answers", 1)["backend"] != out.info("student_answers", 0)["backend"]


def test_student_server_launched_and_stopped_by_tapir(tmp_path, tiny_model, register_plugin, monkeypatch):
    import socket

    monkeypatch.setenv("TAPIR_QUIET", "1")
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(support=str(SUPPORT)))
    flag = tmp_path / "up.txt"
    out = _run(tmp_path, tiny_model, register_plugin, {
        "model": "openai/student", "launch": f"{sys.executable} {script} {{port}} {flag}", "ready_timeout_s": 60})
    assert flag.read_text() == "up"
    port = re.search(r"127\.0\.0\.1:(\d+)", out.info("student_answers", 0)["backend"]).group(1)
    with socket.socket() as s:  # stopped after the stage: nothing listens any more
        assert s.connect_ex(("127.0.0.1", int(port))) != 0
    db = sqlite_utils.Database(tmp_path / "t.db")
    texts = [r[0] for r in db.execute("select text from responses where role = 'student'")]
    assert len(texts) == 32 and all(t.startswith("served answer to ") for t in texts)


REPLICA = """
import os, sys, time
sys.path.insert(0, {support!r})
from tapir_testing.openai_server import OpenAIServer
port = int(sys.argv[1])
srv = OpenAIServer(reply=lambda m, b: f"replica {{port}}: " + m[-1]["content"][:30], port=port).start()
open(sys.argv[2], "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
while True:
    time.sleep(1)
"""


def test_student_replicas_share_the_answers(tmp_path, tiny_model, register_plugin, monkeypatch):
    """serve.replicas: N servers, each with its own GPUs, filling the backend's server pool."""
    import socket

    monkeypatch.setenv("TAPIR_QUIET", "1")
    script = tmp_path / "replica.py"
    script.write_text(REPLICA.format(support=str(SUPPORT)))
    _run(tmp_path, tiny_model, register_plugin, {
        "model": "openai/student", "replicas": 2, "ready_timeout_s": 60,
        "launch": f"{sys.executable} {script} {{port}} {tmp_path}/gpus-{{replica}}.txt",
        "options": {"concurrency": 2}})
    assert (tmp_path / "gpus-0.txt").read_text() == "0" and (tmp_path / "gpus-1.txt").read_text() == "1"
    db = sqlite_utils.Database(tmp_path / "t.db")
    texts = [r[0] for r in db.execute("select text from responses where role = 'student'")]
    ports = {int(re.match(r"replica (\d+): ", t).group(1)) for t in texts}
    assert len(texts) == 32 and len(ports) == 4  # two replicas answered in each of the two student_answers stages
    for port in ports:
        with socket.socket() as s:  # both stopped after the stage
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_replicas_need_a_launch_command():
    import pytest

    from tapir.config import ServeConfig

    with pytest.raises(ValueError, match="replicas > 1 needs launch"):
        ServeConfig(model="openai/student", replicas=2)
