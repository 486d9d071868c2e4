"""Test plugins and config for the pipeline tests (imported by the tests and
by the subprocess of the crash-and-resume test)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
from pathlib import Path

import yaml

from tapir import hookimpl
from tapir import options as opt
from tapir.roles import Completion

ROOT = Path(__file__).resolve().parents[1]
SEED_DATA = ROOT / "data" / "seed_instructions.jsonl"
WORDS = (
    "river mountain ledger violin protein harvest orbit lantern glacier canyon satellite compiler "
    "sonnet fossil courtroom vaccine tariff prism meadow algorithm parliament enzyme marathon comet "
    "sculpture ballad gravity vineyard archive molecule"
).split()


# The task-aware answer templates end the prompt with one of these.
ENHANCED_MARKERS = ("\n\nSolve this step by step", "\n\nGive correct, runnable code",
                    "\n\nGive a helpful, accurate and detailed answer")


class ScriptTeacher:
    """Deterministic stand-in for an API teacher: new instructions built from
    a hash of (prompt, sample), answers that echo the question.

    With TAPIR_TEST_CRASH_AT=N the process kills itself (SIGKILL) when the
    N-th request arrives, to test resuming after a hard crash."""

    calls = 0

    class Options(opt.Options):
        pass

    def __init__(self, name: str, options):
        self.model_id = f"script:{name}"

    def generate(self, requests, on_result=None):
        out = []
        crash_at = int(os.environ.get("TAPIR_TEST_CRASH_AT", "0"))
        for i, req in enumerate(requests):
            ScriptTeacher.calls += 1
            if ScriptTeacher.calls == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            text = req.messages[-1]["content"]
            system = req.messages[0]["content"] if req.messages[0]["role"] == "system" else ""
            digest = hashlib.sha256(f"{text}|{req.sample}".encode()).digest()
            if text.startswith(("You write new tasks", "Act as an Instruction Creator")):
                rng = random.Random(digest)
                answer = "Explain how " + " ".join(rng.sample(WORDS, 6)) + " relate."
            elif system.startswith("You improve"):
                answer = "Step by step: " + text.split("Draft answer:")[-1].strip()[:80]
            elif system.startswith("You refine instructions"):
                answer = "Refined: " + text[:80]
            elif any(t in text for t in ENHANCED_MARKERS):
                answer = "Step by step: an enhanced answer about " + text[:60]
            else:
                answer = "An answer about " + text[:60]
            c = Completion(text=answer, prompt_tokens=len(text.split()), completion_tokens=len(answer.split()))
            out.append(c)
            if on_result:
                on_result(i, c)
        return out


class ScriptPlugin:
    @hookimpl
    def register_backends(self, register):
        register("script", ScriptTeacher, description="test teacher")


def _hf_trainer_class():
    from tapir_trainers.hf_trainer import HFTrainer

    return HFTrainer


class SpyTrainer:
    """Wraps the real trainer (same options) and keeps what each round was given."""

    seen: list = []
    Options = _hf_trainer_class().Options

    @classmethod
    def max_length(cls, options):  # the real trainer's capability (tapir.roles.Bounded): rows are checked
        return _hf_trainer_class().max_length(options)

    def __init__(self, options):
        self.inner = _hf_trainer_class()(options)

    def train(self, base_model, examples, output_dir):
        SpyTrainer.seen.append((output_dir, list(examples)))
        return self.inner.train(base_model, examples, output_dir)


class SpyPlugin:
    @hookimpl
    def register_trainers(self, register):
        register("spy", SpyTrainer)


def write_config(tmp_path: Path, tiny_model: Path, **overrides) -> Path:
    config = {
        "name": "tiny-pipeline",
        "output_dir": str(tmp_path / "out"),
        "data": {"path": str(SEED_DATA), "limit": 16},
        "teacher": {"name": "default", "model": {"model": "script:teacher"}},
        "student": {"model": f"hf:{tiny_model}", "options": {"batch_size": 16}, "generation": {"max_new_tokens": 12}},
        "judge": {"name": "reference-similarity", "options": {"method": "rouge"}},
        "classifier": {"name": "centroid", "options": {"labels_path": str(SEED_DATA)}},
        "rewriter": {"name": "task-aware", "model": {"model": "script:rewriter"}},
        "trainer": {
            "name": "spy",
            "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_length": 96, "lr": 1e-3},
        },
        "mfd": {"delta": None, "top_fraction": 0.5},
        "curriculum": {"rounds": 3, "alpha": 0.3, "alpha_step": 0.2, "expand_per_round": [6, 4, 4]},
    }
    for key, value in overrides.items():
        config[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path




def server_reply(messages, body):
    """What a local OpenAI-compatible server answers for the pipeline's
    prompts (teacher, expansion, refinement, pairwise judge), deterministic
    in the request, like :class:`ScriptTeacher`."""
    text = messages[-1]["content"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    digest = hashlib.sha256(f"{text}|{body.get('seed')}|{body.get('temperature')}".encode()).digest()
    if "Score of the Assistant 1" in text or "Score of the Assistant 1" in system:
        a, b = 4 + digest[0] % 6, 1 + digest[1] % 6
        return f"Evaluation evidence: both answers were read.\nScore of the Assistant 1: {a}\nScore of the Assistant 2: {b}"
    if text.startswith(("You write new tasks", "Act as an Instruction Creator")):
        rng = random.Random(digest)
        return "Explain how " + " ".join(rng.sample(WORDS, 6)) + " relate."
    if system.startswith("You refine instructions"):
        return "Refined: " + text[:80]
    if any(t in text for t in ENHANCED_MARKERS):
        return "Step by step: an enhanced answer about " + text[:60]
    return "An answer about " + text[:60]


def api_config(tmp_path: Path, tiny_model: Path, teacher_url: str, judge_url: str | None = None,
               name: str = "config.yaml", **overrides) -> Path:
    """A small pipeline config whose teacher, rewriter and pairwise judge
    are API models on local servers."""
    api = {"api_key_env": "TAPIR_TEST_KEY", "timeout": 2.0, "max_retries": 2, "retry_base_seconds": 0.05,
           "retry_max_seconds": 2.0, "concurrency": 4}
    config = {
        "name": "api-pipeline",
        "output_dir": str(tmp_path / "out"),
        "data": {"path": str(SEED_DATA), "limit": 8},
        "teacher": {"name": "default", "model": {"model": "openai/teacher",
                                                 "options": {**api, "api_base": teacher_url}}},
        "student": {"model": f"hf:{tiny_model}", "options": {"batch_size": 8}, "generation": {"max_new_tokens": 8}},
        "judge": {"name": "pairwise", "model": {"model": "openai/judge",
                                                "options": {**api, "api_base": judge_url or teacher_url}}},
        "classifier": {"name": "centroid", "options": {"labels_path": str(SEED_DATA)}},
        "rewriter": {"name": "task-aware", "model": {"model": "openai/rewriter",
                                                     "options": {**api, "api_base": teacher_url}}},
        "trainer": {"name": "hf", "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8,
                                              "max_length": 64, "lr": 1e-3}},
        "mfd": {"delta": None, "top_fraction": 0.5},
        "curriculum": {"rounds": 1, "expand_per_round": [3]},
    }
    for key, value in overrides.items():
        config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


class ScriptedClassifier:
    """A task type from a hash of the text (spares loading MiniLM)."""

    needs_model = False

    class Options(opt.Options):
        pass

    def __init__(self, backend, options):
        from tapir.tasks import TASK_TYPES

        self.labels = list(TASK_TYPES)

    def classify(self, texts):
        return [(self.labels[sum(map(ord, t)) % len(self.labels)], 1.0) for t in texts]


def snapshot(db_path: Path, *, calls: bool = False) -> dict:
    """A pipeline database's results, independent of keys and row order: two
    runs that should agree (a clean one, one healed or resumed) compare equal.
    ``calls``: also the stage rows and the LLM calls answered (a resumed run
    pays for nothing twice)."""
    import sqlite_utils

    db = sqlite_utils.Database(db_path)
    q = lambda sql: sorted(tuple(r) for r in db.execute(sql).fetchall())  # noqa: E731
    out = {
        "items": q("select id, origin, round, instruction, output, task_type from items"),
        "responses": q("select item_id, role, round, text from responses"),
        "judgments": q("select item_id, judge, round, score_a, score_b, error from judgments"),
        "scores": q("select item_id, name, round, round(value, 9) from scores"),
        "classifications": q("select item_id, label from classifications"),
        "rewrites": q("select item_id, new_item_id, round, refined_instruction from rewrites"),
        "checkpoints": q("select round from checkpoints"),
        "outcomes": q("select item_id, status from outcomes"),
    }
    if calls:
        out["stages"] = q("select name, round, status from stages")
        out["llm_calls"] = db.execute("select count(*) from llm_calls where error is null").fetchone()[0]
        out["llm_calls_by_model"] = q("select model, count(*) from llm_calls where model like 'script:%' "
                                      "group by model")
    return out
