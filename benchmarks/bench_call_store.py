"""tapir's own CPU per LLM call on the store side: the cache records each
call (llm_calls row, claim released) and the stage's on_result writes its
response and an outcome row (flushed every 64, as Job does), with an
instant in-process backend, so no HTTP client and no event loop are
counted. The part of the rehearsal's per-item CPU that the store costs.

    python benchmarks/bench_call_store.py [--n 5000] [--repeat 3] [--bursts 1,16]

Prints CPU ms per call (process time) per repeat, for each burst size side
by side: the backend hands over its answers one at a time (1), or in
bursts through ``tapir.roles.deliver`` as the API backend does with the
answers it has in hand (one commit per burst). To compare two checkouts,
run it with each one's PYTHONPATH, alternating.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tapir.cache import CachedBackend
from tapir.pipeline.context import Context
from tapir.roles import Completion, GenerationParams, GenerationRequest
from tapir.store import items, outcomes
from tapir.store.db import open_store, utcnow


class Instant:
    """Answers at once, handing them to on_result in bursts of ``burst``
    (tapir.roles.deliver), as the API backend hands over what it has in hand."""

    model_id = "openai/teacher"

    def __init__(self, burst: int):
        self.burst = burst

    def generate(self, requests, on_result=None):
        from tapir.roles import deliver

        out = []
        for i, r in enumerate(requests):
            c = Completion(text="An answer about " + r.messages[-1]["content"][:60], prompt_tokens=20,
                           completion_tokens=12, cost=0.0, latency_s=0.01, finish_reason="stop",
                           attempts=[{"try": 1, "status": 200}])
            out.append(c)
        for start in range(0, len(out), self.burst):
            deliver(on_result, [(i, out[i]) for i in range(start, min(start + self.burst, len(out)))])
        return out


class _StageContext:
    """What Context.save_response reads: the store."""

    def __init__(self, store):
        self.store = store


def one_run(n: int, folder: Path, burst: int) -> float:
    store = open_store(folder / "bench.db")
    conn = store.db.conn
    with conn:
        conn.execute("insert into runs (id, name, status, created_at) values ('r', 'r', 'running', 'now')")
        for name, key in (("ingest", "ing"), ("teacher_answers", "ta")):
            conn.execute("insert into stages (run_id, name, round, key, status) values ('r', ?, 0, ?, 'done')",
                         [name, key])
        items.add_items(store, "ing", [{"id": f"i{k}", "instruction": f"Write about topic {k} " * 6}
                                       for k in range(n)])
    ctx = _StageContext(store)
    cached = CachedBackend(Instant(burst), store, run_id="r")
    cached.tags = {"role": "teacher", "stage_key": "ta", "round": 0}
    requests = [GenerationRequest([{"role": "user", "content": f"Write about topic {k} " * 6}],
                                  GenerationParams(max_new_tokens=512), meta={"item_id": f"i{k}"}) for k in range(n)]
    pending: list[tuple] = []
    offset = [0]

    def on_result(j: int, completion: Completion) -> None:
        i = offset[0] + j
        Context.save_response(ctx, "ta", f"i{i}", "teacher", "openai/teacher", 0, completion)
        pending.append(("ta", f"i{i}", "ok", None, None, None, completion.call_id, 1, utcnow(), None, None))
        if len(pending) >= 64:
            outcomes.save_outcomes(store, pending)
            pending.clear()

    started = time.process_time()
    for start in range(0, n, 1000):
        offset[0] = start
        cached.generate(requests[start:start + 1000], on_result=on_result)
    cpu = time.process_time() - started
    linked = store.execute("select count(*), count(item_uid) from responses").fetchone()
    store.close()
    if linked != (n, n):
        raise SystemExit(f"expected {n} linked responses, got {linked}")
    return 1000 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bursts", default="1,16", help="burst sizes to compare, comma-separated")
    args = parser.parse_args()
    bursts = [int(b) for b in args.bursts.split(",")]
    for _ in range(args.repeat):
        line = []
        for burst in bursts:
            with tempfile.TemporaryDirectory(prefix="tapir-call-store-") as tmp:
                line.append((burst, one_run(args.n, Path(tmp), burst)))
        base = line[0][1]
        print("  ".join(f"burst {b}: {ms:.3f} ms CPU per call ({ms / base:.2f}x)" for b, ms in line)
              + f"  ({args.n} calls)", flush=True)


if __name__ == "__main__":
    main()
