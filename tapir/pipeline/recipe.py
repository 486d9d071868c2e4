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

from tapir.errors import TapirError
from tapir.pipeline.job import Stage
from tapir.pipeline.steps import Node, Step
from tapir.store.db import dumps


def data_digest(report) -> str:
    """What identifies the data: the digest of the rows it holds (a
    :class:`~tapir.pipeline.data.LoadReport`), not how its path is spelled.
    Options that change which rows are read (``data.limit``, ``fields``,
    another split or file) change the rows, so the digest; the counts of bad
    and duplicate rows are in it too, as the ingest stage reports them."""
    rows = [[it.id, it.instruction, it.input, it.output, it.task_type, it.meta] for it in report.items]
    payload = dumps([rows, len(report.bad_rows), report.duplicates])
    return "rows:" + hashlib.sha256(payload.encode()).hexdigest()


def stage_table() -> dict[str, Stage]:
    """Built-in stages, then those plugins register (a plugin may override one)."""
    from tapir.pipeline.stages import BUILTIN
    from tapir.plugins import registry

    table: dict[str, Stage] = {name: cls() for name, cls in BUILTIN.items()}
    for name, component in registry().by_role["stages"].items():
        table[name] = component.load()()
    return table


def build(config, stages: dict[str, Stage], *, run_id: str, digest: str, judge_reads_answer: bool) -> list[Step]:
    """The steps of CONFIG's recipe, in order. Which nodes run, in which
    order and with which options comes from the config; each node's
    upstream nodes come from its stage's ``upstream`` (see :func:`wire`)."""
    skip = set(config.recipe.skip)
    rounds = config.curriculum.rounds
    order: list[tuple[str, int, tuple, tuple[Node, ...]]] = []  # (stage, round, options, config-given after)

    def add(stage: str, round: int = 0, **options) -> Node:
        order.append((stage, round, tuple(sorted(options.items())), ()))
        return (stage, round)

    add("ingest", digest=digest)
    add("teacher_answers", 0)
    train = {0: add("train", 0)}
    if judge_reads_answer:
        add("student_answers", 0)
    add("judge", 0)
    add("seed_cut", 0, all="seed_cut" in skip)
    add("classify", 0)
    reselect = config.curriculum.reselect_seed
    for r in range(1, rounds + 1):
        k = r - 1 if reselect else 0  # the seed cut this round's D_S comes from
        opts = {"cut": k} if k else {}
        if "resample" not in skip:
            add("resample", r, **opts)
        if "expand" not in skip and config.curriculum.expand_per_round[r - 1] > 0:
            add("expand", r, **opts)
            add("teacher_answers", r)
        if config.rewriter is not None and "rewrite" not in skip:
            add("rewrite", r, **opts)
        train[r] = add("train", r, **opts)
        if config.curriculum.recompute_mfd:
            if judge_reads_answer:
                add("student_answers", r)
            add("judge", r)
            if reselect and r < rounds:
                add("seed_cut", r, all="seed_cut" in skip)
    if config.evaluation.heldout is not None:
        add("heldout_answers", 0)
        add("evaluate_base", 0)
        for r in sorted(train):
            add("evaluate", r)
    if config.evaluation.benchmarks:
        from tapir.pipeline.stages.benchmarks import benchmarks_at

        add("benchmarks_base", 0)
        for r in sorted(train):
            if benchmarks_at(config, r):
                add("benchmarks", r)
    for extra in config.recipe.add:
        anchor = (extra.after, extra.round)
        position = next(i for i, s in enumerate(order) if (s[0], s[1]) == anchor) + 1
        order.insert(position, (extra.stage, extra.round, tuple(sorted(extra.options.items())), (anchor,)))
    add("export", 0, run=run_id, **({"cut": rounds - 1} if reselect and rounds > 1 else {}))
    return wire(order, stages)


def wire(order, stages: dict[str, Stage]) -> list[Step]:
    """Each node's upstream nodes: those its stage declares (``upstream``)
    that the recipe holds, in declaration order (a round-None declaration:
    every node of that stage, in recipe order), then any the config gives
    (``recipe.add``'s ``after``). A declared node the recipe runs later is a
    wiring bug, raised here."""
    position = {(name, r): i for i, (name, r, _, _) in enumerate(order)}
    steps: list[Step] = []
    for i, (name, r, options, given) in enumerate(order):
        step = Step(name, r, (), options)
        after: list[Node] = []
        for up, up_round in stages[name].upstream(step):
            nodes = [n for n in position if n[0] == up] if up_round is None else [(up, up_round)]
            for node in nodes:
                if node not in position:
                    continue  # not in this recipe: the stage reads it as None
                if position[node] >= i:
                    raise TapirError(f"recipe: {step.label} reads {node[0]} (round {node[1]}), which runs "
                                     f"after it; a stage can read only the nodes before it")
                if node not in after:
                    after.append(node)
        after += [n for n in given if n not in after]
        steps.append(Step(name, r, tuple(after), options))
    return steps
