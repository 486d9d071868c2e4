"""API path speed: judge-like calls through tapir's litellm backend + cache
against a local OpenAI-compatible server, side by side with a plain
ThreadPoolExecutor over the ``openai`` client (what FastChat's gen_judgment
does), then a cached re-run and a bulk cached look-up.

    python benchmarks/bench_api_judging.py [--calls 640] [--latency 0.1] [--concurrency 16] [--lookups 10000]

Targets: tapir's judge path (backend + cache) <= 1.05x the ideal (calls x
latency / concurrency) at concurrency 16 and 100 ms; cached re-run makes zero
server calls; 10,000 cached look-ups < 2 s.

The server (tests/support/tapir_testing/openai_server.py) runs in its own
process and answers in one write with TCP_NODELAY, so a bare client can reach
the ideal. On a busy machine every client misses it by the scheduling delay of
the server and client processes, so the run also times a bare asyncio HTTP
client (the floor) and prints each path's ratio to it, plus client CPU per
call, which load barely changes. All paths run side by side in one process,
one after the other, and a table at the end sums them up.
"""

from __future__ import annotations

import _support  # noqa: F401  (puts tests/support, the tapir_testing helpers, on sys.path)

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tapir.cache import CachedBackend  # noqa: E402
from tapir_testing.openai_server import OpenAIServer, token_distribution  # noqa: E402
from tapir.roles import Completion, GenerationParams, GenerationRequest  # noqa: E402
from tapir.store import open_store  # noqa: E402

JUDGE_TEXT = (
    "Assistant A gives a correct, well organised answer with a worked example; Assistant B is shorter "
    "and misses one case. Overall A is more helpful and accurate.\n{score}"
)


def judge_reply(messages, body):
    """A judge-like answer: an explanation and a score line; a digit
    distribution as the first token when logprobs are asked for."""
    if body.get("logprobs"):
        return {"text": "8", "logprobs": token_distribution({"8": 0.6, "7": 0.25, "9": 0.15})}
    return JUDGE_TEXT.format(score="Rating: [[8]]")


def judge_requests(n: int, tag: str = "") -> list[GenerationRequest]:
    """``n`` distinct judge prompts (~250 words each); every other one asks for logprobs."""
    filler = " ".join(f"word{j}" for j in range(200))
    out = []
    for i in range(n):
        prompt = (f"[Question {tag}{i}]\nExplain topic {i} in detail. {filler}\n[Answer A]\nAnswer A {i}.\n"
                  f"[Answer B]\nAnswer B {i}.\nRate both 1-10.")
        params = GenerationParams(max_new_tokens=512, top_logprobs=5 if i % 2 else 0)
        out.append(GenerationRequest([{"role": "system", "content": "You are a fair judge."},
                                      {"role": "user", "content": prompt}], params))
    return out


async def _raw_floor(port: int, requests: list[GenerationRequest], concurrency: int) -> None:
    """The same calls from a bare asyncio HTTP/1.1 client (no SDK, no cache):
    the best this machine and server allow right now."""
    import asyncio
    import json

    queue: asyncio.Queue = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not queue.empty():
            request = queue.get_nowait()
            body = json.dumps({"model": "judge", "messages": request.messages, "max_tokens": 512}).encode()
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            json.loads(await reader.readexactly(length))
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class _Instant:
    """Stands in for the API backend to fill the cache quickly (same model id)."""

    def __init__(self, model_id: str):
        self.model_id = model_id

    def generate(self, requests, on_result=None):
        out = []
        for i, _ in enumerate(requests):
            c = Completion(text=JUDGE_TEXT.format(score="Rating: [[8]]"), prompt_tokens=260, completion_tokens=30)
            out.append(c)
            if on_result:
                on_result(i, c)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=640)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--lookups", type=int, default=10_000)
    args = ap.parse_args()

    from tapir_litellm.backend import LiteLLMBackend
    from tapir_litellm.library import import_litellm

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (timings need a quiet machine)")
    t = time.perf_counter()
    import_litellm()
    print(f"import litellm: {time.perf_counter() - t:.2f} s (once per process, not counted below)")
    ideal = args.calls * args.latency / args.concurrency
    tmp = Path(tempfile.mkdtemp(prefix="tapir-bench-api-"))
    # The server runs in its own process (as a real API would), so its CPU work
    # does not compete with the client under test for this process's GIL.
    with OpenAIServer(reply=judge_reply, latency=args.latency, process=True) as srv:
        store = open_store(tmp / "bench.db")

        def ours(transport: str, tag: str) -> tuple[float, LiteLLMBackend, list[GenerationRequest], float]:
            api = LiteLLMBackend("openai/judge", LiteLLMBackend.Options(
                api_base=srv.base_url, concurrency=args.concurrency, transport=transport))
            # Warm-up call (client creation, first-use imports) on another prompt, not timed.
            CachedBackend(api, store).generate(judge_requests(1, tag=f"warm{tag}"))
            srv.reset_counts()
            requests = judge_requests(args.calls, tag=tag)
            t, cpu = time.perf_counter(), time.process_time()
            results = CachedBackend(api, store).generate(requests)
            took, cpu = time.perf_counter() - t, time.process_time() - cpu
            errors = sum(1 for r in results if r.error)
            print(f"[ours, transport={transport} -> {api.transport}] {args.calls} calls, "
                  f"{args.latency * 1000:.0f} ms latency, concurrency {args.concurrency}, cache on: {took:.2f} s; "
                  f"ideal {ideal:.2f} s; ratio {took / ideal:.3f} (target <= 1.05); server calls {srv.requests}, "
                  f"peak in flight {srv.peak_in_flight}, errors {errors}; "
                  f"client CPU {cpu / args.calls * 1000:.2f} ms/call")
            return took, api, requests, cpu / args.calls * 1000

        print()
        rows: list[tuple[str, float, float]] = []  # (path, seconds, client CPU ms/call)
        ours_s, api, requests, ours_cpu = ours("auto", "")
        rows.append(("tapir judge path (direct aiohttp path + cache)", ours_s, ours_cpu))
        via_litellm_s, _, _, lit_cpu = ours("litellm", "lit")
        rows.append(("tapir judge path, transport=litellm", via_litellm_s, lit_cpu))

        import openai

        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-local", max_retries=0, timeout=60)

        def one(request: GenerationRequest) -> str:
            kw = {}
            if request.params.top_logprobs:
                kw = {"logprobs": True, "top_logprobs": request.params.top_logprobs}
            r = client.chat.completions.create(model="judge", messages=request.messages, temperature=0,
                                               max_tokens=request.params.max_new_tokens, **kw)
            return r.choices[0].message.content

        plain_requests = judge_requests(args.calls, tag="plain")
        one(plain_requests[0])  # warm-up
        srv.reset_counts()
        t, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, plain_requests))
        plain, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"[threads+openai] same calls, ThreadPoolExecutor({args.concurrency}) over openai client, no cache: "
              f"{plain:.2f} s; ratio to ideal {plain / ideal:.3f}; server calls {srv.requests}, "
              f"peak in flight {srv.peak_in_flight}; client CPU {cpu / args.calls * 1000:.2f} ms/call")
        rows.append((f"ThreadPoolExecutor({args.concurrency}) + openai client (FastChat's way)", plain,
                     cpu / args.calls * 1000))
        import asyncio

        srv.reset_counts()
        t, cpu = time.perf_counter(), time.process_time()
        asyncio.run(_raw_floor(srv.port, judge_requests(args.calls, tag="raw"), args.concurrency))
        raw, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"[floor] same calls from a bare asyncio HTTP client (no SDK, no cache): {raw:.2f} s; "
              f"ratio to ideal {raw / ideal:.3f}; server calls {srv.requests}")
        rows.append(("bare asyncio HTTP client (floor)", raw, cpu / args.calls * 1000))

        print(f"\n{args.calls} calls, {args.latency * 1000:.0f} ms latency, concurrency {args.concurrency}; "
              f"ideal {ideal:.2f} s")
        print(f"{'path':<58} {'seconds':>8} {'x ideal':>8} {'x floor':>8} {'x threads':>9} {'CPU ms/call':>11}")
        for name, seconds, cpu_ms in rows:
            print(f"{name:<58} {seconds:8.2f} {seconds / ideal:8.3f} {seconds / raw:8.3f} "
                  f"{seconds / plain:9.3f} {cpu_ms:11.2f}")
        verdict = "met" if ours_s / ideal <= 1.05 else "missed"
        print(f"target tapir <= 1.05x ideal: {verdict} ({ours_s / ideal:.3f}x)")

        srv.reset_counts()
        again = CachedBackend(api, store)
        t = time.perf_counter()
        rerun = again.generate(requests)
        rerun_s = time.perf_counter() - t
        print(f"\n[cached re-run] {args.calls} calls: {rerun_s:.3f} s; server calls {srv.requests} (target 0); "
              f"all cached: {all(r.cached for r in rerun)}")

        bulk = judge_requests(args.lookups, tag="bulk")
        t = time.perf_counter()
        CachedBackend(_Instant(api.model_id), store).generate(bulk)
        fill_s = time.perf_counter() - t
        srv.reset_counts()
        lookup = CachedBackend(api, store)
        t = time.perf_counter()
        hits = lookup.generate(bulk)
        lookup_s = time.perf_counter() - t
        print(f"[cache fill] {args.lookups} new calls recorded: {fill_s:.2f} s "
              f"({fill_s / args.lookups * 1000:.3f} ms per call)")
        print(f"[cached look-ups] {args.lookups} requests through CachedBackend.generate: {lookup_s:.3f} s "
              f"(target < 2 s, ratio {lookup_s / 2:.3f} of budget); server calls {srv.requests}; "
              f"all cached: {all(h.cached for h in hits)}")
        store.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
