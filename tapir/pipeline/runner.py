"""Algorithm 1 of TAPIR, stage by stage; every stage is resumable.

    ingest -> teacher_answers -> train S0 -> student_answers -> mfd
    -> select_seed -> classify -> for r in 1..N: resample -> expand
    -> teacher_answers -> rewrite -> train S_r [-> student_answers -> mfd]
    -> export
"""

from __future__ import annotations

from pathlib import Path

from tapir import progress
from tapir.config import PipelineConfig, load_config
from tapir.pipeline import answers, curriculum, expand, export, mfd, taskmix
from tapir.pipeline.context import Context
from tapir.pipeline.data import load_items
from tapir.runs import Run
from tapir.store import open_store


def student_base(config: PipelineConfig) -> str:
    """A folder or hub id the trainer can load for the student's S0."""
    from tapir.models import resolve

    spec = resolve(config.student.model, config.student.options)
    if spec.backend != "hf":
        from tapir.errors import TapirError

        raise TapirError(
            f"student.model '{config.student.model}' resolves to backend '{spec.backend}'; "
            "the student must be a local transformers model (a folder, hub id, or hf:NAME)"
        )
    if spec.name.startswith("embedded:"):
        from tapir_hf.embedded import embedded_model_path

        return str(embedded_model_path())
    return spec.name


def prepare(config_path: str | Path, db: str | None = None) -> Context:
    """Validate everything that can be validated, then open the store.

    Nothing is written before the config and the data have been read and
    checked in full."""
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    report = load_items(config.data, base_dir)
    for line in report.bad_rows[:20]:
        progress.say(f"   skipped bad row: {line}")
    if len(report.bad_rows) > 20:
        progress.say(f"   ... and {len(report.bad_rows) - 20} more bad rows skipped")
    store = open_store(db or config.db)
    run = Run.start(store, config.model_dump(mode="json"), name=config.name)
    out_dir = Path(config.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(config, store, run, base_dir, out_dir)
    ctx.loaded = report  # type: ignore[attr-defined]
    return ctx


def distill(config_path: str | Path, db: str | None = None) -> Context:
    ctx = prepare(config_path, db)
    cfg = ctx.config
    run = ctx.run
    progress.say(f"run {run.id} ({cfg.name}) in {ctx.store.path}; outputs in {ctx.out_dir}")

    def ingest(info):
        report = ctx.loaded  # type: ignore[attr-defined]
        for it in report.items:
            if it.task_type:
                it.meta["dataset_task_type"] = it.task_type
        ctx.add_items(report.items, "seed", 0)
        info.update(items=len(report.items), bad_rows=len(report.bad_rows), duplicates=report.duplicates)

    with progress.timed("ingest"):
        run.step("ingest", ingest)
    seed = ctx.items("origin = 'seed'")

    with progress.timed("teacher answers"):
        run.step("teacher_answers", lambda info: answers.teacher_answers(ctx, seed, 0, info))

    seed_info: dict = {}
    base = student_base(cfg)
    with progress.timed("train S0"):
        def train_s0(info):
            examples = curriculum.weighted_examples(curriculum.with_teacher_answers(ctx, seed, 0), [], 1.0)
            path = curriculum.train(ctx, base, examples, 0, info)
            export.model_card(ctx, path, 0, len(examples), None, seed_info)

        run.step("train", train_s0, round=0)
    s0 = curriculum.checkpoint(ctx, 0)

    if ctx.judge_reads_student_answer():
        with progress.timed("student S0 answers"):
            run.step("student_answers", lambda info: answers.student_answers(ctx, seed, s0, 0, info))
    with progress.timed("MFD"):
        run.step("mfd", lambda info: mfd.judge_mfd(ctx, seed, s0, 0, info))
        run.step("select_seed", lambda info: mfd.select_seed(ctx, info))
    with progress.timed("classify"):
        run.step("classify", lambda info: taskmix.classify(ctx, seed, info))

    seed = ctx.items("origin = 'seed'")  # with task types now
    hard_flags = ctx.scores("hard", 0)
    hard = [it for it in seed if hard_flags.get(it.id) == 1.0]
    easy = [it for it in seed if hard_flags.get(it.id) != 1.0]
    cut = run.stage_info("select_seed")
    seed_info.update(hard=len(hard), easy=len(easy), rule=cut.get("rule", "?"))
    weights = taskmix.task_weights(cfg.resample.weights)
    prev = s0
    last_examples: list = []
    last_items: list = []
    for r in range(1, cfg.curriculum.rounds + 1):
        expanded_before = ctx.items("origin = 'expanded' and round < ?", [r])
        pool = hard + expanded_before
        target = cfg.curriculum.expand_per_round[min(r, len(cfg.curriculum.expand_per_round)) - 1]
        draws = taskmix.resample(pool, target, weights, cfg.seed * 100 + r)
        with progress.timed(f"round {r}: resample + expand"):
            run.step("resample", lambda info: taskmix.record_resample(ctx, draws, pool, r, weights, info), round=r)
            run.step("expand", lambda info: expand.expand(ctx, draws, pool, r, info), round=r)
        new_items = ctx.items("origin = 'expanded' and round = ?", [r])
        with progress.timed(f"round {r}: teacher answers"):
            run.step("teacher_answers", lambda info: answers.teacher_answers(ctx, new_items, r, info), round=r)
        to_rewrite = curriculum.with_teacher_answers(ctx, new_items + (hard if r == 1 else []), r)
        with progress.timed(f"round {r}: rewrite"):
            run.step("rewrite", lambda info: curriculum.rewrite(ctx, to_rewrite, r, info), round=r)

        alpha = curriculum.alpha_for(r, cfg.curriculum.alpha, cfg.curriculum.alpha_step)
        hard_set = curriculum.rewritten_versions(
            ctx, curriculum.with_teacher_answers(ctx, hard + ctx.items("origin = 'expanded' and round <= ?", [r]), r)
        )
        easy_set = curriculum.with_teacher_answers(ctx, easy, 0)
        examples = curriculum.weighted_examples(hard_set, easy_set, alpha)
        last_examples, last_items = examples, hard_set + easy_set

        def train_round(info, r=r, examples=examples, prev=prev, alpha=alpha, n_hard=len(hard_set)):
            info.update(alpha=alpha, hard_examples=n_hard, easy_examples=len(examples) - n_hard)
            path = curriculum.train(ctx, prev, examples, r, info)
            export.model_card(ctx, path, r, len(examples), alpha, seed_info)

        with progress.timed(f"round {r}: train S{r} (alpha {alpha:.2f})"):
            run.step("train", train_round, round=r)
        prev = curriculum.checkpoint(ctx, r)
        if cfg.curriculum.recompute_mfd:
            with progress.timed(f"round {r}: MFD with S{r}"):
                if ctx.judge_reads_student_answer():
                    run.step("student_answers", lambda info: answers.student_answers(ctx, seed, prev, r, info),
                             round=r)
                run.step("mfd", lambda info: mfd.judge_mfd(ctx, seed, prev, r, info), round=r)

    def do_export(info):
        export.write_dataset(ctx, export.dataset_rows(last_examples, last_items), info)
        rounds = [0] + (list(range(1, cfg.curriculum.rounds + 1)) if cfg.curriculum.recompute_mfd else [])
        plot = export.plot_mfd(ctx, rounds, (cut["threshold"], cut["rule"]) if "threshold" in cut else None)
        if plot:
            info["mfd_plot"] = plot

    with progress.timed("export"):
        run.step("export", do_export)
    run.finish("done")
    return ctx

