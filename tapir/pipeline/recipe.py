"""The stage list of a run, assembled from the config.

The TAPIR recipe (Algorithm 1)::

    ingest -> teacher_answers -> train S0 -> [student_answers] -> judge -> seed_cut
    classify
    for r in 1..N: [resample] -> [expand -> teacher_answers] -> [rewrite] -> train S_r
                   [-> student_answers -> judge]   (curriculum.recompute_mfd)
    [heldout_answers -> evaluate_base, evaluate S_0..S_N]   (evaluation.heldout)
    [benchmarks_base, benchmarks S_0..S_N]                  (evaluation.benchmarks)
    export

Variants are config, not code: ``curriculum.rounds: 1`` (one round),
``rewriter: null`` or ``recipe.skip: [rewrite]`` (no rewriting),
``recipe.skip: [resample]`` (expansion seeds keep the natural task mix),
``recipe.skip: [seed_cut]`` (every judged item is hard), ``recipe.skip:
[expand]`` (no new instructions), ``resample.weights: uniform``. A plugin
adds a stage with the ``register_stages`` hook and ``recipe.add``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tapir.pipeline.engine import Node, Stage, Step


def data_digest(config, base_dir: Path) -> str:
    """What identifies the data's content: the file's bytes, or the hub id."""
    from tapir.config import resolve_path

    data = config.data
    if data.path:
        path = resolve_path(data.path, base_dir)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return "sha256:" + h.hexdigest()
    return f"hub:{data.hf_dataset}:{data.hf_config}:{data.split}"


def stage_table() -> dict[str, Stage]:
    """Built-in stages, then those plugins register (a plugin may override one)."""
    from tapir.pipeline.stages import BUILTIN
    from tapir.plugins import registry

    table: dict[str, Stage] = {name: cls() for name, cls in BUILTIN.items()}
    for name, component in registry().by_role["stages"].items():
        table[name] = component.load()()
    return table


def build(config, *, run_id: str, digest: str, judge_reads_answer: bool) -> list[Step]:
    skip = set(config.recipe.skip)
    rounds = config.curriculum.rounds
    steps: list[Step] = []

    def add(stage: str, round: int = 0, after: tuple[Node, ...] = (), **options) -> Node:
        steps.append(Step(stage, round, tuple(n for n in after if n is not None), tuple(sorted(options.items()))))
        return (stage, round)

    ingest = add("ingest", digest=digest)
    answers = {0: add("teacher_answers", 0, (ingest,))}
    train = {0: add("train", 0, (ingest, answers[0]))}
    student = add("student_answers", 0, (ingest, train[0])) if judge_reads_answer else None
    judges = [add("judge", 0, (ingest, answers[0], train[0], student))]
    cut = add("seed_cut", 0, (judges[0],), all="seed_cut" in skip)
    classify = add("classify", 0, (ingest,))
    expanded: list[Node] = []
    rewrites: list[Node] = []
    cuts = {0: cut}
    reselect = config.curriculum.reselect_seed
    for r in range(1, rounds + 1):
        k = r - 1 if reselect else 0  # the seed cut this round's D_S comes from
        opts = {"cut": k} if k else {}
        now_cut = cuts[k]
        base = (ingest, now_cut, classify, *expanded)
        resample = add("resample", r, base, **opts) if "resample" not in skip else None
        if "expand" not in skip and config.curriculum.expand_per_round[r - 1] > 0:
            expanded.append(add("expand", r, (*base, resample), **opts))
            answers[r] = add("teacher_answers", r, (expanded[-1],))
        if config.rewriter is not None and "rewrite" not in skip:
            rewrites.append(add("rewrite", r, (ingest, now_cut, classify, *expanded, *answers.values()), **opts))
        train[r] = add("train", r, (train[r - 1], ingest, now_cut, classify, *expanded, *answers.values(),
                                    *rewrites), **opts)
        if config.curriculum.recompute_mfd:
            student_r = add("student_answers", r, (ingest, train[r])) if judge_reads_answer else None
            judges.append(add("judge", r, (ingest, answers[0], train[r], student_r)))
            if reselect and r < rounds:
                cuts[r] = add("seed_cut", r, (judges[-1],), all="seed_cut" in skip)
    evaluations: list[Node] = []
    if config.evaluation.heldout is not None:
        heldout = add("heldout_answers", 0, (ingest,))
        evaluations.append(add("evaluate_base", 0, (heldout,)))
        evaluations += [add("evaluate", r, (heldout, train[r])) for r in sorted(train)]
    if config.evaluation.benchmarks:
        from tapir.pipeline.stages.benchmarks import benchmarks_at

        evaluations.append(add("benchmarks_base", 0))
        evaluations += [add("benchmarks", r, (train[r],)) for r in sorted(train) if benchmarks_at(config, r)]
    for extra in config.recipe.add:
        anchor = (extra.after, extra.round)
        position = next(i for i, s in enumerate(steps) if s.node == anchor) + 1
        steps.insert(position, Step(extra.stage, extra.round, (anchor,), tuple(sorted(extra.options.items()))))
    add("export", 0, (ingest, *cuts.values(), classify, *train.values(), *judges, *expanded, *rewrites,
                      *answers.values(), *evaluations),
        run=run_id, **({"cut": rounds - 1} if reselect and rounds > 1 else {}))
    return steps
