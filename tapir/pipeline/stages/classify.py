"""classify: a task type for every ingested instruction (the classifications
table, under this stage's key; the ingested rows are never changed)."""

from __future__ import annotations

from tapir import progress
from tapir.pipeline.job import Job
from tapir.store.classifications import set_labels


class Classify:
    name = "classify"
    reads = ("classifier",)

    @staticmethod
    def upstream(step):
        return (("ingest", 0),)
    version = "1"
    max_failure_rate = 0.0

    def run(self, job: Job) -> None:
        ctx = job.ctx
        items = ctx.items(job.scope("ingest"))
        todo_ids = set(job.todo(it.id for it in items))
        todo = [it for it in items if it.id in todo_ids]
        name = ctx.config.classifier.name
        if todo:
            with progress.bar("classifying task types", len(todo)) as bar:
                texts = [it.prompt for it in todo]
                if ctx.classifier.needs_model:  # an LLM classifier records each call with its item
                    labels = ctx.classifier.classify(texts, item_ids=[it.id for it in todo])
                else:
                    labels = ctx.classifier.classify(texts)
                bar.update(len(todo))
            with ctx.store.transaction():
                set_labels(ctx.store, job.key, name,
                           [(it.id, label, confidence) for it, (label, confidence) in zip(todo, labels)])
            for it, (label, _) in zip(todo, labels):
                if label:
                    job.ok(it.id)
                else:
                    job.fail(it.id, "the classifier gave no label", "classifier")
            # No later stage classifies: what the classifier holds (the centroid classifier's
            # encoder, about 90 MB) is freed now instead of at the end of the run.
            ctx.drop_role("classifier")
        labels_now = ctx.labels(job.key)
        counts: dict[str, int] = {}
        for label in labels_now.values():
            counts[label] = counts.get(label, 0) + 1
        job.info.update(classified=len(todo), counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])))
        given = [(it.meta.get("dataset_task_type"), it.id) for it in items if it.meta.get("dataset_task_type")]
        if given:
            agree = sum(1 for label, iid in given if labels_now.get(iid) == label)
            job.info["agreement_with_dataset_labels"] = round(agree / len(given), 4)


def with_labels(job: Job, items):
    """Seed items with the task type the classify stage gave them."""
    from dataclasses import replace

    labels = job.ctx.labels(job.scope("classify"))
    return [replace(it, task_type=labels.get(it.id, it.task_type)) for it in items]
