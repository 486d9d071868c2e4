"""ingest: the working instructions, read and checked before anything is written."""

from __future__ import annotations

from tapir.pipeline.job import Job


class Ingest:
    name = "ingest"
    reads = ()  # the data is identified by its rows' digest (the recipe's digest option), not its config

    @staticmethod
    def upstream(step):
        return ()
    version = "1"
    max_failure_rate = 1.0  # bad rows are reported at load time (data.on_bad_row)

    def run(self, job: Job) -> None:
        report = job.ctx.loaded
        for it in report.items:
            if it.task_type:
                it.meta["dataset_task_type"] = it.task_type
        job.ctx.add_items(job.key, report.items, "seed", 0)
        for it in report.items:
            job.ok(it.id)
        job.info.update(items=len(report.items), bad_rows=len(report.bad_rows), duplicates=report.duplicates)
        if report.sampled_from is not None:
            job.info["sampled_from"] = report.sampled_from
