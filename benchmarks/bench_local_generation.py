"""Local path speed: tapir's ``hf`` backend on the embedded SmolLM2-135M-Instruct.

(a) our batched ``generate`` against a bare ``model.generate`` on the same
    batch, prompts and lengths (overhead ratio; target <= 1.10),
(b) batch 8 against batch 1 (tokens/s),
(c) time per judgment: a logprob-read judgment (1 new token with
    top_logprobs) against a generated one (64 new tokens).

Every generation runs exactly ``--new-tokens`` tokens (EOS ignored, i.e.
``min_new_tokens = max_new_tokens``), so both sides of each comparison do the
same work. Runs alternate and medians are compared.

Wall time and this process's CPU time are both printed. On a machine shared
with other jobs the wall time swings by 2x from run to run while the CPU
time stays put, so compare CPU-time ratios there; on a quiet machine the two
agree.

    python benchmarks/bench_local_generation.py [--tiny] [--batch 8] [--new-tokens 32] [--repeat 2]

``--tiny`` uses the tiny random test model (seconds; for a smoke run). The
default model is converted once into $TAPIR_CACHE_DIR on first use (~20 s).
"""

from __future__ import annotations

import _support  # noqa: F401  (puts tests/support, the tapir_testing helpers, on sys.path)

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tapir.roles import GenerationParams, GenerationRequest  # noqa: E402

INSTRUCTIONS = [
    "What is the capital of France?",
    "Explain why the sky is blue in two sentences.",
    "Write a Python function that returns the square of a number.",
    "Give three tips for staying healthy, with one sentence on each.",
    "Translate 'good morning, how are you today?' into Spanish and French.",
    "What is 12 times 12? Show your working step by step before giving the answer.",
    "Summarise the plot of Romeo and Juliet for a ten-year-old in a short paragraph.",
    "List the planets of the solar system in order from the sun, and say which is largest.",
]

JUDGE = (
    "Please act as an impartial judge and rate the answer below on a scale of 1 to 10 for helpfulness, "
    "relevance, accuracy and level of detail.\n\n[Question]\n{q}\n\n[Answer]\n{a}\n\n"
    "Reply with the rating as a single digit."
)
ANSWER = ("Paris is the capital of France. It is also the largest city in the country and is known for the "
          "Eiffel Tower, the Louvre museum and its cafes.")


class Clock:
    """Wall and CPU seconds of one call."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    @staticmethod
    def median(clocks: list["Clock"]) -> "Clock":
        return Clock(statistics.median(c.wall for c in clocks), statistics.median(c.cpu for c in clocks))

    def __str__(self):
        return f"{self.wall:7.2f} s wall {self.cpu:7.2f} s cpu"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Clock(time.perf_counter() - wall, time.process_time() - cpu), result


def rate(tokens: int, clock: Clock) -> str:
    return f"{tokens / clock.wall:7.1f} tokens/s wall {tokens / clock.cpu:7.1f} tokens/cpu-s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="use the tiny random test model instead of SmolLM2")
    ap.add_argument("--model", default=None, help="any model folder (overrides --tiny)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--judge-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from tapir_hf.backend import HFBackend

    if args.model:
        model_name = args.model
    elif args.tiny:
        from tapir_testing.models import build_tiny_model

        model_name = str(build_tiny_model(os.path.join(tempfile.gettempdir(), "tapir-bench-tiny")))
    else:
        model_name = "embedded:smollm2-135m-instruct"
    n_prompts = max(args.batch, 1)
    prompts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(n_prompts)]

    ours = HFBackend(model_name, HFBackend.Options(batch_size=args.batch, ignore_eos=True))
    load, (tok, model) = timed(lambda: (ours.tokenizer, ours.model))  # the first access loads
    print(f"model {ours.model_id}  device {model.device}  dtype {model.dtype}  torch threads "
          f"{torch.get_num_threads()}")

    def requests(n_new, texts=prompts, **kw):
        return [GenerationRequest([{"role": "user", "content": t}], GenerationParams(max_new_tokens=n_new, **kw))
                for t in texts]

    def run_ours(backend, reqs):
        out = backend.generate(reqs)
        bad = [c.error for c in out if c.error]
        assert not bad, bad[0]
        assert all(c.completion_tokens == r.params.max_new_tokens for c, r in zip(out, reqs))
        return out

    # Same inputs for the bare side: the chat template, padded on the left.
    texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
             for t in prompts]

    def run_bare(n_new):
        enc = tok(texts, padding=True, add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            seqs = model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        assert seqs.shape[1] - enc["input_ids"].shape[1] == n_new
        return tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    # warm-up (first calls allocate and pick kernels)
    run_ours(ours, requests(2))
    run_bare(2)

    # (a) overhead against bare model.generate
    n = args.new_tokens
    tokens = len(prompts) * n
    c_ours, c_bare = [], []
    for _ in range(args.repeat):
        clock, out = timed(lambda: run_ours(ours, requests(n)))
        c_ours.append(clock)
        clock, bare_texts = timed(lambda: run_bare(n))
        c_bare.append(clock)
    same = [c.text for c in out] == bare_texts
    m_ours, m_bare = Clock.median(c_ours), Clock.median(c_bare)
    print(f"\n(a) batch {len(prompts)} x {n} new tokens, median of {args.repeat}")
    print(f"    bare model.generate  {m_bare}   {rate(tokens, m_bare)}")
    print(f"    tapir hf generate    {m_ours}   {rate(tokens, m_ours)}")
    for what in ("wall", "cpu"):
        ratio = getattr(m_ours, what) / getattr(m_bare, what)
        print(f"    overhead ratio ({what:4}) {ratio:6.3f}   (target <= 1.10: {'ok' if ratio <= 1.10 else 'MISSED'})")
    print(f"    same texts: {same}")

    # (b) batch 8 vs batch 1
    one = HFBackend(model_name, HFBackend.Options(batch_size=1, ignore_eos=True))  # shares the loaded model
    c1, _ = timed(lambda: run_ours(one, requests(n)))
    print(f"\n(b) {len(prompts)} prompts x {n} new tokens")
    print(f"    batch 1  {c1}   {rate(tokens, c1)}")
    print(f"    batch {args.batch}  {m_ours}   {rate(tokens, m_ours)}")
    print(f"    speed-up x{c1.wall / m_ours.wall:.2f} wall, x{c1.cpu / m_ours.cpu:.2f} cpu")

    # (c) time per judgment
    judge_texts = [JUDGE.format(q=q, a=ANSWER) for q in prompts]
    run_ours(ours, requests(1, judge_texts, top_logprobs=10))  # warm-up for the longer prompts
    c_lp, lp_out = timed(lambda: run_ours(ours, requests(1, judge_texts, top_logprobs=10)))
    c_gen, _ = timed(lambda: run_ours(ours, requests(args.judge_tokens, judge_texts)))
    k = len(judge_texts)
    prompt_tokens = statistics.mean(c.prompt_tokens for c in lp_out)
    print(f"\n(c) {k} judgments (~{prompt_tokens:.0f} prompt tokens each), batch {args.batch}, per judgment")
    print(f"    logprob judgment (1 token, top 10)  {c_lp.wall / k:7.3f} s wall {c_lp.cpu / k:7.3f} s cpu")
    print(f"    generated judgment ({args.judge_tokens} tokens)     {c_gen.wall / k:7.3f} s wall "
          f"{c_gen.cpu / k:7.3f} s cpu   x{c_gen.wall / c_lp.wall:.1f} wall, x{c_gen.cpu / c_lp.cpu:.1f} cpu")
    print(f"\nmodel load {load} (first load in this process, from the converted folder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
