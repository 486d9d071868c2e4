"""The trustworthy-runs scenarios, measured: calls each re-run sends, items
lost, calls paid twice. The tiny model and local OpenAI-compatible servers;
offline, about 2 minutes on 2 cores.

    python benchmarks/trust_scenarios.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "support")]
os.environ.update(TAPIR_QUIET="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
                  TAPIR_TEST_KEY="sk-test-not-a-real-key-000000")

import sqlite_utils  # noqa: E402
import yaml  # noqa: E402
from pipeline_helpers import api_config, server_reply  # noqa: E402
from tapir_testing.models import build_tiny_model  # noqa: E402
from tapir_testing.openai_server import Faults, OpenAIServer  # noqa: E402

from tapir.pipeline.engine import StageFailed  # noqa: E402
from tapir.pipeline.runner import distill  # noqa: E402

API = "model like 'litellm:%'"


def ok_calls(db: Path) -> int:
    return sqlite_utils.Database(db).execute(f"select count(*) from llm_calls where error is null and {API}").fetchone()[0]


def failed_items(db: Path) -> int:
    return sqlite_utils.Database(db).execute("select count(*) from outcomes where status = 'failed'").fetchone()[0]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tapir-trust-"))
    tiny = build_tiny_model(tmp / "tiny")
    rows = []

    # Clean run: the reference counts.
    with OpenAIServer(reply=server_reply) as srv:
        d = tmp / "clean"
        d.mkdir()
        distill(api_config(d, tiny, srv.base_url), d / "t.db")
        clean_calls = srv.requests
        rows.append(("fault-free run", f"{clean_calls} requests", "-", 0))
        # Edited seed cut.
        cfg = d / "config.yaml"
        data = yaml.safe_load(cfg.read_text())
        data["mfd"] = {"delta": None, "top_fraction": 0.25}
        cfg.write_text(yaml.safe_dump(data))
        before = srv.requests
        out = distill(cfg, d / "t.db")
        reused = [r.step.label for r in out.results if r.status == "reused"]
        rows.append(("edited seed cut (top 50% -> 25%)", f"{srv.requests - before} requests (new rounds only)",
                     f"reused: {', '.join(reused)}", failed_items(d / "t.db")))

    # 401 on every call, then a fixed key.
    state = {"broken": True}
    with OpenAIServer(reply=server_reply, faults=lambda i, b: "401" if state["broken"] else None) as srv:
        d = tmp / "401"
        d.mkdir()
        cfg = api_config(d, tiny, srv.base_url)
        try:
            distill(cfg, d / "t.db")
        except StageFailed:
            pass
        first = srv.requests
        state["broken"] = False
        distill(cfg, d / "t.db")
        rows.append(("401 everywhere, then fixed", f"run 1: {first}, re-run: {srv.requests - first}",
                     f"ok calls {ok_calls(d / 't.db')} = clean {clean_calls}", failed_items(d / "t.db")))

    # Judge endpoint down, then back.
    state = {"down": True}
    with OpenAIServer(reply=server_reply) as teacher, OpenAIServer(
            reply=server_reply, faults=lambda i, b: "503" if state["down"] else None) as judge:
        d = tmp / "down"
        d.mkdir()
        cfg = api_config(d, tiny, teacher.base_url, judge.base_url)
        try:
            distill(cfg, d / "t.db")
            code = 0
        except StageFailed:
            code = 1
        t1, j1 = teacher.requests, judge.requests
        state["down"] = False
        distill(cfg, d / "t.db")
        rows.append(("judge down, then back", f"run 1 exit {code}; re-run: teacher {teacher.requests - t1}, "
                     f"judge {judge.requests - j1}", "teacher answers reused", failed_items(d / "t.db")))

    # 20% 429/500 + 5% timeouts + 5% malformed.
    faults = Faults(rates={"429": 0.1, "500": 0.1, "slow": 0.05, "malformed": 0.05}, seed=3)
    faults.retry_after = 0
    faults.slow_seconds = 3.0
    with OpenAIServer(reply=server_reply, faults=faults) as srv:
        d = tmp / "faults"
        d.mkdir()
        cfg = api_config(d, tiny, srv.base_url)
        sent = []
        for _ in range(8):
            before = srv.requests
            try:
                out = distill(cfg, d / "t.db")
                sent.append(srv.requests - before)
                if all(r.failed == 0 for r in out.results):
                    break
            except StageFailed:
                sent.append(srv.requests - before)
        twice = srv.requests - sum(srv.faults_injected.values()) - ok_calls(d / "t.db")
        rows.append(("20% 429/500, 5% timeouts, 5% malformed", f"requests per run: {sent}",
                     f"{sum(srv.faults_injected.values())} faults injected; answered twice: {max(0, twice)}",
                     failed_items(d / "t.db")))

    print(f"{'scenario':<42} {'requests sent':<44} {'notes':<52} items lost")
    for name, sent_text, note, lost in rows:
        print(f"{name:<42} {sent_text:<44} {note:<52} {lost}")


if __name__ == "__main__":
    main()
