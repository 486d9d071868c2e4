"""tapir's CPU per API call, layer by layer, side by side in one run: the
same local OpenAI-compatible server (its own process, instant answers),
4000 calls at concurrency 64 through

- ``bare``: aiohttp alone (the direct path's session: post, read, json);
- ``direct``: ``tapir_litellm.direct.acompletion`` (body, headers, errors);
- ``backend``: ``LiteLLMBackend.generate`` (gates, retries, attempt log,
  the Completion, the hand-over to the calling thread);
- ``cached``: behind ``CachedBackend`` (the llm_calls row, claims, one
  commit per burst).

    python benchmarks/bench_api_layers.py [--n 4000] [--repeat 2]

Prints process CPU ms per call for each layer and its ratio to ``bare``.
The server's CPU is not counted (another process). A stage adds its own
work (prompt, checks, response and outcome rows) on top of ``cached``.
"""

from __future__ import annotations

import _support  # noqa: F401  (tests/support on sys.path: the local server)

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TAPIR_QUIET", "1")
os.environ.setdefault("TAPIR_BENCH_KEY", "sk-local")

WORKERS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="calls per layer")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from tapir_litellm import direct
    from tapir_litellm.backend import LiteLLMBackend
    from tapir_litellm.loop import get_loop
    from tapir_testing.openai_server import OpenAIServer

    from tapir.cache import CachedBackend
    from tapir.roles import GenerationParams, GenerationRequest
    from tapir.store.db import open_store

    n = args.n

    def requests(tag: str) -> list[GenerationRequest]:
        return [GenerationRequest([{"role": "user", "content": f"{tag} question number {i} about things"}],
                                  GenerationParams(max_new_tokens=32)) for i in range(n)]

    with OpenAIServer(process=True) as srv:
        backend = LiteLLMBackend("openai/teacher", LiteLLMBackend.Options(
            api_base=srv.base_url, api_key_env="TAPIR_BENCH_KEY", concurrency=WORKERS))
        backend.generate(requests("warm-up")[:10])  # the session is made here
        kwargs = backend._kwargs(requests("x")[0])
        url = srv.base_url.rstrip("/") + "/chat/completions"
        body = direct.body_of(kwargs)[0]

        async def workers(one) -> None:
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:  # one event loop: taking the next is atomic
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(WORKERS)))

        async def bare(i: int) -> None:
            payload = {**body, "messages": [{"role": "user", "content": f"bare {i}"}]}
            async with direct._session().post(url, data=json.dumps(payload).encode(),
                                              headers={"Content-Type": "application/json"}) as response:
                json.loads(await response.read())

        async def via_direct(i: int) -> None:
            await direct.acompletion({**kwargs, "messages": [{"role": "user", "content": f"direct {i}"}]})

        def on_loop(one):
            return lambda _tag: asyncio.run_coroutine_threadsafe(workers(one), get_loop()).result()

        tmp = tempfile.TemporaryDirectory(prefix="tapir-api-layers-")
        stores = [open_store(Path(tmp.name) / f"t{rep}.db") for rep in range(args.repeat)]  # opened untimed

        def cached(tag: str) -> None:
            CachedBackend(backend, stores[int(tag.rsplit("-", 1)[1])]).generate(requests(tag))

        layers = {"bare": on_loop(bare), "direct": on_loop(via_direct),
                  "backend": lambda tag: backend.generate(requests(tag)), "cached": cached}
        for rep in range(args.repeat):
            line = {}
            for name, run in layers.items():
                cpu = time.process_time()
                run(f"{name}-{rep}")
                line[name] = 1000 * (time.process_time() - cpu) / n
            print("  ".join(f"{name} {ms:.3f} ms ({ms / line['bare']:.2f}x)" for name, ms in line.items())
                  + f"  CPU per call, {n} calls", flush=True)
        for store in stores:
            store.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
