"""Paper-scale rehearsal: the whole pipeline (``tapir.pipeline.runner.distill``)
on N synthetic Alpaca-style instructions, with the teacher, the pairwise
judge and the rewriter on a local OpenAI-compatible server (its own
process; instant, or with ``--latency`` seconds per answer), the tiny model
as the student (trained for ``--max-steps`` capped steps per round, answering
one token per instruction through the local hf backend), and the paper's
proportions scaled to N: seed cut top 20%, ``expand_per_round`` 19K/20K/20K
of 52K, 3 rounds.

    python benchmarks/bench_rehearsal.py --n 1000 [--latency 0.0] [--concurrency 64]
        [--json results/rehearsal-1000.json] [--profile prof.out] [--keep DIR]
    python benchmarks/bench_rehearsal.py --table results/rehearsal-*.json   # growth table

Per stage it prints the items handled, wall time, tapir's own CPU time per
item (this process's CPU time during the stage: time blocked on the server
costs no CPU, and the server runs in another process), the stand-in
server's CPU seconds during the stage (it shares the machine's cores with
tapir, so on 2 cores it lengthens the wall time of every API stage; a real
API or inference server runs elsewhere), the peak RSS so far and the
database size after the stage. Stages that run a model (train,
student_answers, classify: torch and the sentence encoder) are marked
``model``: their CPU is mostly the model's, not tapir's. The sentence
encoder's CPU (``tapir_hf.encoder.embed``: tokenizing and the forward
passes) is also counted on its own (``encoder s``), and ``own ms/item`` is
the stage's CPU without it. ``--table`` reads
the JSON of several runs and prints per stage the CPU per item at each N
and the growth factor of the CPU per item from the smallest N to the
largest (1.0 = linear).

Goal (issue 12): 52K completes on 2 cores in under 30 minutes, tapir's own
work under 2 ms per item per stage. Issue 20, item 7: under 10 minutes and
1.5 GB, tapir's own CPU under 1 ms per item in every stage but training.
"""

from __future__ import annotations

import _support  # puts tests/support (the tapir_testing helpers) on sys.path; _support.timed

import argparse
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TAPIR_QUIET", "1")
os.environ.setdefault("TAPIR_BENCH_KEY", "sk-local")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED_DATA = ROOT / "data" / "seed_instructions.jsonl"
MODEL_STAGES = {"train", "student_answers", "classify"}

# Task-type words, so the centroid classifier sees every type and the
# de-duplication sees varied text.
TEMPLATES = {
    "Math": ["Calculate the {a} of {n} {b} if each {c} costs {m} dollars.",
             "Solve for x: {n}x + {m} = {k}, and explain the {a} step.",
             "What is the probability of drawing {n} {b} from a bag of {m} {c}?"],
    "Code Generation": ["Write a Python function that {v} a list of {b} by {a}.",
                        "Implement a {a} {b} class in JavaScript that can {v} {c}.",
                        "Write SQL to {v} every {b} whose {a} exceeds {n}."],
    "Reasoning": ["If every {b} is a {c} and some {c} are {a}, can a {b} be {a}? Explain.",
                  "Three {b} stand in a row; the {a} one is left of the {c}. Who is in the middle?"],
    "Writing": ["Write a short poem about a {a} {b} near the {c}.",
                "Compose an email to a {b} about the {a} {c}.",
                "Write a story in which a {b} discovers a {a} {c}."],
    "Brainstorming": ["List {n} creative ways to use a {a} {b} at a {c}.",
                      "Suggest names for a {a} {b} shop selling {c}."],
    "Open QA": ["Why does a {b} {v} when the {c} is {a}?",
                "What is the history of the {a} {b} in {c} culture?"],
    "Classification": ["Classify the following {b} as {a} or {c}: {d}.",
                       "Is a {b} a {a} or a {c}? Answer with one word."],
    "Extraction": ["Extract every {b} mentioned in this text about the {a} {c}: {d}.",
                   "From the passage on {a} {b}, list the names of each {c}."],
    "Summarization": ["Summarize this paragraph about the {a} {b} and the {c} in two sentences.",
                      "Give a one-line summary of the report on {a} {b}."],
    "Rewriting": ["Rewrite this sentence in a {a} tone: the {b} {v} the {c}.",
                  "Paraphrase: a {a} {b} quietly {v} the old {c}."],
    "Roleplay": ["Pretend you are a {a} {b} and describe your day at the {c}.",
                 "Act as a {b} guide and welcome visitors to the {a} {c}."],
}
WORDS = (
    "river mountain ledger violin protein harvest orbit lantern glacier canyon satellite compiler sonnet fossil "
    "courtroom vaccine tariff prism meadow algorithm parliament enzyme marathon comet sculpture ballad gravity "
    "vineyard archive molecule falcon quartz harbor pepper tundra beacon copper saffron lagoon meteor orchard "
    "turbine ember cobalt desert granite jasmine kettle lichen mosaic nectar obsidian pylon quiver rampart "
    "sequoia thimble umbra velvet walrus xylem yarrow zephyr anchor bramble cipher dynamo estuary fjord geyser "
    "hamlet iceberg jetty kiln lattice monsoon nebula oasis pagoda quasar reef savanna trellis utopia vortex "
    "willow atlas bazaar citadel delta equinox foundry garnet hollow isthmus juniper knoll lighthouse mantle"
).split()
ADJ = ("quiet ancient bright hidden fragile rapid gentle curious hollow vivid frozen golden silent crooked "
       "distant humble noisy sturdy clever rusty").split()
VERBS = "sorts filters groups ranks merges splits counts reverses scans maps".split()


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    types = list(TEMPLATES)
    while len(rows) < n:
        task = types[len(rows) % len(types)]
        template = rng.choice(TEMPLATES[task])
        text = template.format(a=rng.choice(ADJ), b=rng.choice(WORDS), c=rng.choice(WORDS), d=rng.choice(WORDS),
                               v=rng.choice(VERBS), n=rng.randint(2, 99), m=rng.randint(2, 999),
                               k=rng.randint(100, 9999))
        if text in seen:
            continue
        seen.add(text)
        rows.append({"instruction": text, "input": "", "output": ""})
    return rows


ENHANCED_MARKERS = ("\n\nSolve this step by step", "\n\nGive correct, runnable code",
                    "\n\nGive a helpful, accurate and detailed answer")


def reply(messages, body):
    """The server's answers to the pipeline's prompts, deterministic in the
    request (like tests/pipeline_helpers.server_reply, with a larger
    vocabulary so tens of thousands of new instructions are not duplicates)."""
    text = messages[-1]["content"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    digest = hashlib.sha256(f"{text}|{body.get('seed')}|{body.get('temperature')}".encode()).digest()
    if "Score of the Assistant 1" in text or "Score of the Assistant 1" in system:
        a, b = 4 + digest[0] % 6, 1 + digest[1] % 6
        return (f"Evaluation evidence: both answers were read.\nScore of the Assistant 1: {a}\n"
                f"Score of the Assistant 2: {b}")
    if text.startswith(("You write new tasks", "Act as an Instruction Creator")):
        # Sampled (temperature 0.7): a new draw per request, as a real model's would be.
        r = random.Random()
        return (f"{r.choice(('Explain how', 'Describe why', 'Compare how', 'Show where'))} the "
                f"{r.choice(ADJ)} " + " ".join(r.sample(WORDS, 5)) + f" {r.choice(VERBS)} {r.randint(2, 999)}.")
    if body.get("model") == "student":  # student.serve: a shorter answer than the teacher's
        return "Briefly: " + text[:40]
    if system.startswith("You refine instructions"):
        return "Refined: " + text[:80]
    if any(t in text for t in ENHANCED_MARKERS):
        return "Step by step: an enhanced answer about " + text[:60]
    return "An answer about " + text[:60]


def write_config(tmp: Path, n: int, data: Path, model: Path, url: str, concurrency: int, max_steps: int,
                 expansion_prompt: str = "tapir-examples", student: str = "server") -> Path:
    api = {"api_key_env": "TAPIR_BENCH_KEY", "api_base": url, "timeout": 60.0, "max_retries": 3,
           "retry_base_seconds": 0.05, "retry_max_seconds": 5.0, "concurrency": concurrency}
    per_round = [max(1, round(n * k / 52000)) for k in (19000, 20000, 20000)]
    config = {
        "name": f"rehearsal-{n}",
        "output_dir": str(tmp / "out"),
        "data": {"path": str(data)},
        # tapir-examples: with Table 7's prompt (one given instruction) every draw of an
        # over-sampled seed is the same request, so they share answers (see docs/rehearsal.md).
        "teacher": {"name": "default", "model": {"model": "openai/teacher", "options": api},
                    "options": {"expansion_prompt": expansion_prompt}},
        "student": {"model": f"hf:{model}", "options": {"batch_size": 64},
                    "generation": {"max_new_tokens": 1}},  # the local hf backend answers (--student hf)
        "judge": {"name": "pairwise", "model": {"model": "openai/judge", "options": api}},
        "classifier": {"name": "centroid", "options": {"labels_path": str(SEED_DATA)}},
        "rewriter": {"name": "task-aware", "model": {"model": "openai/rewriter", "options": api}},
        "trainer": {"name": "hf", "options": {"max_steps": max_steps, "batch_size": 8, "micro_batch_size": 8,
                                              "max_length": 64, "lr": 1e-3}},
        "mfd": {"delta": None, "top_fraction": 0.2},
        "curriculum": {"rounds": 3, "expand_per_round": per_round},
    }
    if student == "server":  # student.serve: the server answers as each round's checkpoint
        config["student"]["serve"] = {"model": "openai/student", "options": api}
        config["student"]["generation"] = {"max_new_tokens": 64}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vmrss_mb() -> float:
    """The current resident set (VmRSS of /proc/self/status), MB; 0 where there is no /proc.
    ru_maxrss only grows: this shows what a stage gave back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def run(args) -> dict:
    from tapir.pipeline import engine as engine_mod
    from tapir.pipeline.runner import distill
    from tapir_testing.models import build_tiny_model
    from tapir_testing.openai_server import OpenAIServer

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tapir-rehearsal-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "instructions.jsonl"
    with data.open("w") as f:
        for row in synthetic_rows(args.n):
            f.write(json.dumps(row) + "\n")
    model = build_tiny_model(tmp / "tiny-llama")
    db = tmp / "rehearsal.db"
    stages: list[dict] = []
    original = engine_mod.Engine.run_step
    server_pid: list[int | None] = [None]

    encoder_cpu: list[float] = []  # CPU seconds of each encoder call

    def timed_step(self, step):
        cpu, wall = time.process_time(), time.perf_counter()
        encoder_calls = len(encoder_cpu)
        rss_before = vmrss_mb()
        server_cpu = process_cpu_s(server_pid[0])
        try:
            return original(self, step)
        finally:
            result = self.results.get(step.node)
            ok = result.ok if result else 0
            failed = result.failed if result else 0
            cpu_s = time.process_time() - cpu
            info = result.info if result else {}
            items = max(1, ok + failed or info.get("examples", 0) or info.get("rows", 0))
            stages.append({
                "stage": step.stage, "round": step.round, "ok": ok, "failed": failed,
                "calls": result.calls if result else 0, "wall_s": round(time.perf_counter() - wall, 3),
                "cpu_s": round(cpu_s, 3), "cpu_ms_per_item": round(1000 * cpu_s / items, 3),
                "encoder_cpu_s": round(sum(encoder_cpu[encoder_calls:]), 3),
                "own_cpu_ms_per_item": round(1000 * (cpu_s - sum(encoder_cpu[encoder_calls:])) / items, 3),
                "server_cpu_s": round(process_cpu_s(server_pid[0]) - server_cpu, 3),
                "rss_mb": round(rss_mb(), 1), "vmrss_before_mb": round(rss_before, 1),
                "vmrss_mb": round(vmrss_mb(), 1), "db_mb": round(db_bytes(db) / 2**20, 1),
                "items": items, "status": result.status if result else "?", "model": step.stage in MODEL_STAGES and not (step.stage == "student_answers" and args.student == "server"),
            })
            if args.verbose:
                print(json.dumps(stages[-1]), file=sys.stderr, flush=True)

    engine_mod.Engine.run_step = timed_step
    # The sentence encoder's CPU (tokenizer and forward passes: the classify stage's model work), counted
    # apart so that a stage's own CPU is what tapir does around the model.
    import tapir_hf.encoder as encoder_mod

    original_embed = encoder_mod.embed
    encoder_mod.embed = _support.timed(original_embed, encoder_cpu.append, time.process_time)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    with OpenAIServer(reply=reply, latency=args.latency, process=True) as server:
        server_pid[0] = server._child.pid  # the stand-in server's CPU is counted apart from tapir's
        server_cpu0 = process_cpu_s(server_pid[0])
        config = write_config(tmp, args.n, data, model, server.base_url, args.concurrency, args.max_steps,
                              args.expansion_prompt, args.student)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            distill(config, str(db))
        finally:
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            engine_mod.Engine.run_step = original
            encoder_mod.embed = original_embed
        total = {"wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
                 "server_cpu_s": round(process_cpu_s(server_pid[0]) - server_cpu0, 1), "requests": server.requests}
    total.update(n=args.n, student=args.student, latency=args.latency, concurrency=args.concurrency, rss_mb=round(rss_mb(), 1),
                 db_mb=round(db_bytes(db) / 2**20, 1), cores=os.cpu_count())
    return {"total": total, "stages": stages, "dir": str(tmp)}


def print_run(result: dict) -> None:
    t = result["total"]
    print(f"rehearsal N={t['n']} latency={t['latency']}s concurrency={t['concurrency']}: wall {t['wall_s']} s, "
          f"CPU {t['cpu_s']} s (the stand-in server's: {t.get('server_cpu_s', '?')} s), {t['requests']} server "
          f"requests, peak RSS {t['rss_mb']} MB, db {t['db_mb']} MB")
    print(f"{'stage':<18}{'rnd':>4}{'items':>8}{'calls':>8}{'wall s':>9}{'cpu s':>8}{'cpu ms/item':>13}"
          f"{'encoder s':>10}{'own ms/item':>13}{'server s':>10}{'rss MB':>8}{'db MB':>7}")
    for s in result["stages"]:
        mark = "  model" if s["model"] else ""
        own = s.get("own_cpu_ms_per_item", s["cpu_ms_per_item"])
        print(f"{s['stage']:<18}{s['round']:>4}{s.get('items', s['ok'] + s['failed']):>8}{s['calls']:>8}{s['wall_s']:>9.1f}"
              f"{s['cpu_s']:>8.1f}{s['cpu_ms_per_item']:>13.3f}{s.get('encoder_cpu_s', 0.0):>10.1f}{own:>13.3f}"
              f"{s.get('server_cpu_s', 0.0):>10.1f}{s['rss_mb']:>8.0f}{s['db_mb']:>7.1f}{mark}")


def print_table(paths: list[str]) -> None:
    runs = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda r: r["total"]["n"])
    ns = [r["total"]["n"] for r in runs]
    head = "".join(f"{f'ms/item {n}':>15}" for n in ns)
    print(f"| stage | rnd | " + " | ".join(f"CPU ms/item N={n}" for n in ns)
          + " | " + " | ".join(f"wall s N={n}" for n in ns) + f" | growth {ns[0]}->{ns[-1]} |")
    print("|---|---|" + "---|" * (2 * len(ns) + 1))
    del head
    first = runs[0]["stages"]
    for i, s in enumerate(first):
        per = [r["stages"][i]["cpu_ms_per_item"] if i < len(r["stages"]) else float("nan") for r in runs]
        walls = [r["stages"][i]["wall_s"] if i < len(r["stages"]) else float("nan") for r in runs]
        growth = per[-1] / per[0] if per[0] else float("nan")
        name = s["stage"] + (" (model)" if s["model"] else "")
        print(f"| {name} | {s['round']} | " + " | ".join(f"{p:.3f}" for p in per) + " | "
              + " | ".join(f"{w:.1f}" for w in walls) + f" | {growth:.2f} |")
    print("| **total** | | " + " | ".join(f"CPU {r['total']['cpu_s']} s" for r in runs) + " | "
          + " | ".join(f"{r['total']['wall_s']}" for r in runs) + " | |")
    print("| peak RSS MB | | " + " | ".join(f"{r['total']['rss_mb']}" for r in runs) + " | "
          + " | ".join("" for _ in runs) + " | |")
    print("| db MB | | " + " | ".join(f"{r['total']['db_mb']}" for r in runs) + " | "
          + " | ".join("" for _ in runs) + " | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic instructions (1000, 10000, 52000)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the server waits per answer")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per API model")
    parser.add_argument("--max-steps", type=int, default=2, help="optimizer steps per training round")
    parser.add_argument("--expansion-prompt", default="tapir-examples", help="teacher option (table7 or tapir-examples)")
    parser.add_argument("--student", choices=("server", "hf"), default="server",
                        help="who answers as the student: the local server (student.serve) or the hf backend "
                             "on the tiny checkpoint (max_new_tokens 1)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", help="cProfile the run into this file")
    parser.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--verbose", action="store_true", help="print each stage's figures as it ends")
    parser.add_argument("--table", nargs="+", help="print the growth table of these JSON results and exit")
    args = parser.parse_args()
    if args.table:
        print_table(args.table)
        return
    result = run(args)
    print_run(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
