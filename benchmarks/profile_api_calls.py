"""Where an API call's CPU goes, per thread: N calls through the cache and
the litellm backend's direct path to the local OpenAI-compatible server (in
its own process), with cProfile in the calling thread (the store's writes)
and in the event-loop thread (aiohttp, the gates). cProfile times by the
wall clock, so a thread waiting for the GIL counts that wait where it
waits; compare with ``bench_call_store.py`` (the store's work alone).

    python benchmarks/profile_api_calls.py [--n 4000] [--top 14]

Prints the CPU per call (process time, profilers on) and each thread's
most expensive functions.
"""

from __future__ import annotations

import _support  # noqa: F401  (tests/support on sys.path: the local server)

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TAPIR_QUIET", "1")
os.environ.setdefault("TAPIR_BENCH_KEY", "sk-local")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="calls to make")
    parser.add_argument("--top", type=int, default=14, help="functions shown per thread")
    args = parser.parse_args()

    from tapir_litellm.backend import LiteLLMBackend
    from tapir_litellm.loop import get_loop
    from tapir_testing.openai_server import OpenAIServer

    from tapir.cache import CachedBackend
    from tapir.roles import GenerationParams, GenerationRequest
    from tapir.store.db import open_store

    with OpenAIServer(process=True) as srv:
        backend = LiteLLMBackend("openai/teacher", LiteLLMBackend.Options(
            api_base=srv.base_url, api_key_env="TAPIR_BENCH_KEY", concurrency=64))
        cached = CachedBackend(backend, open_store(Path(tempfile.mkdtemp()) / "t.db"))
        cached.generate([GenerationRequest([{"role": "user", "content": "warm-up"}])])  # the session is made here
        loop_profile, main_profile = cProfile.Profile(), cProfile.Profile()
        get_loop().call_soon_threadsafe(loop_profile.enable)
        time.sleep(0.2)
        requests = [GenerationRequest([{"role": "user", "content": f"question number {i} about things"}],
                                      GenerationParams(max_new_tokens=32)) for i in range(args.n)]
        cpu, wall = time.process_time(), time.perf_counter()
        main_profile.enable()
        cached.generate(requests)
        main_profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        get_loop().call_soon_threadsafe(loop_profile.disable)
        time.sleep(0.2)
    print(f"{args.n} calls: {1000 * cpu / args.n:.3f} ms CPU a call (profilers on), {wall:.1f} s wall")
    for name, profile in (("event-loop thread", loop_profile), ("calling thread", main_profile)):
        stats = pstats.Stats(profile)
        print(f"\n{name}: {1000 * stats.total_tt / args.n:.3f} ms a call (wall clock, waits included)")
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
