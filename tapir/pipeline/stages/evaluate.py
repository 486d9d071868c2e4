"""heldout_answers, evaluate_base and evaluate: evidence that the students
get better. The teacher answers instructions no round trains on (taken from
``evaluation.heldout``); every checkpoint (and the base model) is scored by
its mean per-token negative log-likelihood of those answers. Lower is
better. Rows land in ``benchmark_results`` (benchmark ``heldout-loss``,
model = the checkpoint folder), so ``tapir compare`` and ``tapir report``
show them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

from tapir import progress
from tapir.errors import TapirError
from tapir.pipeline.context import params_of
from tapir.pipeline.job import Job
from tapir.roles import Completion

BENCHMARK = "heldout-loss"


class HeldoutAnswers:
    name = "heldout_answers"
    reads = ("evaluation.heldout", "teacher")

    @staticmethod
    def upstream(step):
        return (("ingest", 0),)
    version = "1"
    max_failure_rate = 0.05

    def run(self, job: Job) -> None:
        from tapir.config.schema import DataConfig
        from tapir.pipeline.data import load_items

        ctx = job.ctx
        cfg = ctx.config.evaluation.heldout
        report = load_items(DataConfig(path=cfg.path, limit=cfg.skip + cfg.limit), ctx.base_dir)
        trained = {it.id for it in ctx.items(job.scope("ingest"))}
        items = [it for it in report.items[cfg.skip:] if it.id not in trained]
        ctx.add_items(job.key, items, "heldout", 0)
        todo_ids = set(job.todo(it.id for it in items))
        todo = [it for it in items if it.id in todo_ids]
        model = ctx.config.teacher.model.model if ctx.config.teacher.model else "dataset"
        with progress.bar("teacher answers (held-out)", len(todo)) as bar:

            def on_result(i: int, completion: Completion) -> None:
                bar.update()
                if completion.ok and completion.text.strip():
                    ctx.save_response(job.key, todo[i].id, "teacher", model, 0, completion)
                    job.ok(todo[i].id, completion.call_id)
                else:
                    job.fail_completion(todo[i].id, completion, "held-out teacher answer")

            params = params_of(ctx.config.teacher.model)
            if cfg.max_new_tokens is not None:
                params = replace(params, max_new_tokens=cfg.max_new_tokens)
            ctx.teacher.answer(todo, params, on_result=on_result)
        job.info.update(items=len(items), overlapping_training=len(report.items[cfg.skip:]) - len(items))


class Evaluate:
    """Held-out NLL of checkpoint S_r (stage ``evaluate``) or of the base
    model (``evaluate_base``)."""

    name = "evaluate"
    # Not all of evaluation: adding a benchmark leaves the held-out rows valid.
    reads = ("evaluation.heldout", "student.options")

    @staticmethod
    def upstream(step):
        return ("heldout_answers", 0), ("train", step.round)
    version = "3"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        scope = job.scope("heldout_answers")
        items = {it.id: it for it in ctx.items(scope)}
        answers = ctx.responses(scope, "teacher")
        pairs = [(items[i], a["text"]) for i, a in answers.items() if i in items]
        if not pairs:
            raise TapirError("no held-out teacher answers to evaluate on (see the heldout_answers stage)")
        if self.name == "evaluate_base":
            model_path, label = ctx.student_base(), "base"
        else:
            model_path, label = job.upstream_info("train", job.round)["path"], f"S{job.round}"
        backend = ctx.backend("evaluator", f"hf:{model_path}", ctx.config.student.options)
        prompts = [it.messages for it, _ in pairs]
        with progress.bar(f"held-out loss of {label}", len(pairs)) as bar:
            logprobs = []
            for start in range(0, len(pairs), 16):
                logprobs += backend.score(prompts[start : start + 16], [a for _, a in pairs[start : start + 16]])
                bar.update(min(16, len(pairs) - start))
        tokens = sum(len(lp) for lp in logprobs)
        nll = -sum(sum(lp) for lp in logprobs) / max(1, tokens)
        per_item = [-sum(lp) / max(1, len(lp)) for lp in logprobs]
        mean = sum(per_item) / len(per_item)
        stderr = math.sqrt(sum((x - mean) ** 2 for x in per_item) / max(1, len(per_item) - 1) / len(per_item))
        version = hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:12]
        meta = {"round": job.round if self.name == "evaluate" else None, "label": label, "judge": None,
                "judge_mode": "n/a", "failures": 0, "failure_reasons": {}, "failure_example": None,
                "data_version": f"heldout:{version}", "subset": None, "tokens": tokens,
                "run_stage": self.name, "status": "ok",
                "options": {"heldout": ctx.config.evaluation.heldout.model_dump(mode="json")}}
        from tapir.bench import upsert_rows

        # The base row is stored under the student's model id, so compare puts
        # every S_r beside its base; checkpoints under their folders.
        stored_as = ctx.config.student.model if self.name == "evaluate_base" else model_path
        upsert_rows(ctx.store, BENCHMARK, stored_as, job.key, [
            {"task": "heldout", "metric": "nll", "value": nll, "stderr": stderr, "n": len(pairs), "meta": meta},
            {"task": "heldout", "metric": "perplexity", "value": math.exp(nll), "stderr": None, "n": len(pairs),
             "meta": meta},
        ])
        for it, _ in pairs:
            job.ok(it.id)
        job.info.update(label=label, model=model_path, nll=round(nll, 5), perplexity=round(math.exp(nll), 4),
                        n=len(pairs), tokens=tokens)
        progress.say(f"   held-out loss of {label}: {nll:.4f} nats/token (perplexity {math.exp(nll):.2f}, "
                     f"n {len(pairs)})")


class EvaluateBase(Evaluate):
    name = "evaluate_base"
    reads = ("evaluation.heldout", "student.options", "student.model")

    @staticmethod
    def upstream(step):
        return (("heldout_answers", 0),)
