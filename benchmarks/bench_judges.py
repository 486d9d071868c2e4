"""Judge-layer speed: what tapir's judges add on top of the backend.

Side by side in one run, against a local OpenAI-compatible server through
the litellm backend (each answer waits ``--latency`` s):

(a) the ``pairwise`` judge on N requests (2N prompts, both orders) against
    the same 2N prompts sent straight to the backend in one ``generate``
    call (ratio; target ~1.0: building prompts, parsing and averaging cost
    nothing next to the calls, and the judge does not serialise them);
(b) the same with a nudge round for 10% of the prompts (the retry is one
    more concurrent batch, so ~2 latencies, not 10% x N of them);
(c) parsing throughput: recorded judge texts parsed per second.

    python benchmarks/bench_judges.py [--requests 320] [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import _support  # noqa: F401  (puts tests/support, the tapir_testing helpers, on sys.path)

import argparse
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tapir.judging import parse_pair, parse_rating  # noqa: E402
from tapir_testing.openai_server import OpenAIServer  # noqa: E402
from tapir.roles import GenerationRequest, JudgeRequest  # noqa: E402

EXPLAINED = ("Assistant 1 is accurate and gives a worked example; Assistant 2 misses a case.\n"
             "Assistant 1: 8\nAssistant 2: 6")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=320)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    from tapir_judges.pairwise import PairwiseJudge
    from tapir_judges.prompts import pairwise_messages
    from tapir_litellm.backend import LiteLLMBackend

    bad_every = 10  # (b): every 10th first reply is unparseable

    def reply(messages, body):
        if len(messages) > 2:  # a nudge
            return EXPLAINED
        question = messages[-1]["content"].split("### Question\n", 1)[1].split("\n", 1)[0]
        if (args.bad and int(question.split()[-1]) % bad_every == 0):
            return "Both answers are fine."
        return EXPLAINED

    requests = [JudgeRequest(f"question {i}", f"answer a {i}", f"answer b {i}") for i in range(args.requests)]
    ideal = 2 * args.requests * args.latency / args.concurrency
    print(f"{args.requests} pairwise requests = {2 * args.requests} prompts, latency {args.latency}s, "
          f"concurrency {args.concurrency}; ideal {ideal:.2f}s")

    for label, bad in (("(a) all parse", False), ("(b) 10% nudged", True)):
        args.bad = bad
        with OpenAIServer(reply=reply, latency=args.latency) as srv:
            backend = LiteLLMBackend("openai/judge", LiteLLMBackend.Options(api_base=srv.base_url,
                                                                     concurrency=args.concurrency))
            judge = PairwiseJudge(backend, PairwiseJudge.Options(prompt="tapir"))  # the replies are in its format
            prompts = [pairwise_messages(r.question, a, b) for order in ("ab", "ba") for r in requests
                       for a, b in [((r.answer_a, r.answer_b) if order == "ab" else (r.answer_b, r.answer_a))]]
            backend.generate([GenerationRequest(prompts[0], judge.params)])  # warm litellm up
            t = time.perf_counter()
            backend.generate([GenerationRequest(m, judge.params) for m in prompts])
            raw = time.perf_counter() - t
            t = time.perf_counter()
            js = judge.judge(requests)
            ours = time.perf_counter() - t
        ok = sum(j.ok for j in js)
        print(f"{label}: backend alone {raw:6.2f}s ({raw / ideal:4.2f}x ideal)   pairwise judge {ours:6.2f}s "
              f"({ours / ideal:4.2f}x ideal)   judge/backend {ours / raw:4.2f}x   ok {ok}/{len(js)}")

    texts = [EXPLAINED, "Rating: [[7]]", "The answer is good.\n\nRating: 8/10", "no score here"] * 2500
    t = time.perf_counter()
    for text in texts:
        parse_pair(text)
        parse_rating(text)
    dt = time.perf_counter() - t
    print(f"(c) parsing: {len(texts) / dt:,.0f} texts/s (pair + rating on each)")


if __name__ == "__main__":
    main()
