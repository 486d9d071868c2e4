"""MT-Bench judging speed: 160 answers (80 questions x 2 turns) graded by the
``mtbench-single`` judge through tapir's MT-Bench runner (litellm backend +
LLM-call cache + store) against a local OpenAI-compatible server with a
fixed latency, side by side with FastChat's way (a ThreadPoolExecutor
calling the ``openai`` client once per judgment) at the same parallelism,
and against the ideal time (answers x latency / concurrency).

    python benchmarks/bench_mtbench_judging.py [--latency 0.1] [--concurrency 16] [--data-dir DIR]

The answers are written into the store first, so the timed run is judging
only (plus loading the questions, reading and writing the store, scoring).
The same 160 judge prompts go to the FastChat-style pool. A second run of
the runner shows the re-run cost (zero server calls).
"""

from __future__ import annotations

import _support  # noqa: F401  (puts tests/support, the tapir_testing helpers, on sys.path)

import argparse
import os
import re
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TAPIR_QUIET", "1")

from tapir_testing.openai_server import OpenAIServer  # noqa: E402
from tapir.store import open_store  # noqa: E402

MODEL = "bench/student"
JUDGE_TEXT = ("The assistant's answer is relevant and mostly accurate, with a clear structure; it misses one "
              "detail the question asked for. Rating: [[{score}]]")


def judge_reply(messages, body):
    user = messages[-1]["content"]
    return JUDGE_TEXT.format(score=1 + len(user) % 10)


def _write_answers(store, run_id: str, questions, tag: str = "") -> None:
    from tapir.store import records

    records.save_responses(store, run_id, "answer", MODEL, [
        (q.item_id, t, f"{tag}Answer of the student to turn {t} of question {q.question_id}. " * 8, None)
        for q in questions for t in (1, 2)
    ])


def _fmt(times: list[float], ideal: float) -> str:
    best, med = min(times), statistics.median(times)
    return f"best {best:.2f} s (ratio to ideal {best / ideal:.3f}), median {med:.2f} s (ratio {med / ideal:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of each way (fresh prompts)")
    ap.add_argument("--data-dir", default=None, help="MT-Bench data (default: the installed copy)")
    args = ap.parse_args()

    import openai

    from tapir.models import load_backend
    from tapir.plugins import registry
    from tapir_litellm.library import import_litellm
    from tapir_mtbench.data import load_mtbench
    from tapir_mtbench.judging import _single_request

    t = time.perf_counter()
    import_litellm()
    print(f"import litellm: {time.perf_counter() - t:.2f} s (once per process, not counted below)")

    questions = load_mtbench(args.data_dir).questions
    n = 2 * len(questions)
    ideal = n * args.latency / args.concurrency
    tmp = Path(tempfile.mkdtemp(prefix="tapir-bench-mtbench-"))
    print(f"{n} answers, {args.latency * 1000:.0f} ms server latency, concurrency {args.concurrency}: "
          f"ideal {ideal:.2f} s; {args.repeat} interleaved repetitions, fresh prompts each time")
    with OpenAIServer(reply=judge_reply, latency=args.latency) as srv:
        judge_options = {"api_base": srv.base_url, "concurrency": args.concurrency}
        options = {"data_dir": args.data_dir, "judge_model": "openai/judge", "judge_options": judge_options}
        options = {k: v for k, v in options.items() if v is not None}
        evaluator = registry().get("evaluators", "mtbench").create()
        judge = registry().get("judges", "mtbench-single").create(load_backend("openai/judge", judge_options))
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-local", max_retries=0, timeout=60)
        pattern = re.compile(r"\[\[(\d+\.?\d*)\]\]")

        def fastchat_one(messages) -> float | None:
            r = client.chat.completions.create(model="judge", messages=messages, temperature=0, max_tokens=2048)
            match = pattern.search(r.choices[0].message.content or "")
            return float(match.group(1)) if match else None

        def requests_for(tag: str):
            answers = {(q.item_id, t): (0, f"{tag}Answer of the student to turn {t} of question {q.question_id}. " * 8)
                       for q in questions for t in (1, 2)}
            return [_single_request(q, t, answers) for q in questions for t in (1, 2)]

        # warm-up of every path (client creation, first-use imports), not timed
        store = open_store(tmp / "bench.db")
        _write_answers(store, "warm", questions[:1], tag="warm-up. ")
        evaluator.run(MODEL, store, run_id="warm", categories=questions[0].category, **options)
        fastchat_one(judge.messages(requests_for("warm-fc. ")[0])[1])
        judge.judge(requests_for("warm-bare. ")[:1])

        ours, plain, bare, calls, peaks = [], [], [], [], []
        rows: list = []
        for rep in range(args.repeat):
            # tapir: the MT-Bench runner (judge + litellm backend + cache + store + scores)
            _write_answers(store, f"bench{rep}", questions, tag=f"rep {rep}. ")
            srv.reset_counts()
            t = time.perf_counter()
            rows = evaluator.run(MODEL, store, run_id=f"bench{rep}", **options)
            ours.append(time.perf_counter() - t)
            calls.append(srv.requests)
            peaks.append(srv.peak_in_flight)

            # FastChat's way: a thread pool calling the openai client once per judgment
            prompts = [judge.messages(r)[1] for r in requests_for(f"fastchat {rep}. ")]
            srv.reset_counts()
            t = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                scores = list(pool.map(fastchat_one, prompts))
            plain.append(time.perf_counter() - t)
            assert srv.requests == n and all(s is not None for s in scores)

            # the same judge over the bare litellm backend (no cache, store, runner)
            requests = requests_for(f"bare {rep}. ")
            srv.reset_counts()
            t = time.perf_counter()
            judged = judge.judge(requests)
            bare.append(time.perf_counter() - t)
            assert srv.requests == n and all(j.ok for j in judged)

        overall = next(r for r in rows if r["task"] == "overall")
        failures = next(r for r in rows if r["task"] == "judge")["value"]
        print(f"\n[tapir mtbench runner] {_fmt(ours, ideal)}; server calls {calls}, peak in flight {max(peaks)}, "
              f"judge failures {failures:g}, overall score {overall['value']:.3f} (n={overall['n']})")
        print(f"[FastChat way: ThreadPoolExecutor({args.concurrency}) x openai client] {_fmt(plain, ideal)}")
        print(f"[same judge over bare litellm backend, no cache/store/runner] {_fmt(bare, ideal)}")
        print(f"tapir / FastChat way: best {min(ours) / min(plain):.3f}, "
              f"median {statistics.median(ours) / statistics.median(plain):.3f}")
        print(f"tapir runner / bare backend: best {min(ours) / min(bare):.3f} "
              f"(the runner, cache and store's share)")

        srv.reset_counts()
        t = time.perf_counter()
        evaluator.run(MODEL, store, run_id="bench0", **options)
        print(f"\n[re-run] {time.perf_counter() - t:.3f} s; server calls {srv.requests} (target 0)")
        store.close()


if __name__ == "__main__":
    main()
