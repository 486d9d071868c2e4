"""The dry run: :func:`plan` turns a checked config
(:func:`tapir.pipeline.preflight.check`) into the stages in order, which
would be reused, LLM calls per role and round, estimated tokens and cost
from each model's backend (its ``price`` capability; assumptions printed),
and training examples and steps per round (the trainer's ``steps_for``);
:func:`render` prints it. What a component knows about itself (a judge that
asks twice per pair, a rewriter that also asks the teacher) comes from its
``estimate`` capability (tapir.roles.CAPABILITIES): nothing here names a plugin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapir.capabilities import estimate, generation, price, steps_for
from tapir.config.schema import ModelRef
from tapir.pipeline.preflight import Checked
from tapir.roles import CallEstimate


@dataclass
class PlannedStage:
    label: str
    key: str
    action: str  # reuse | run | ...
    calls: dict[str, int] = field(default_factory=dict)  # role -> calls
    examples: int | None = None
    steps: int | None = None


@dataclass
class Plan:
    stages: list[PlannedStage]
    calls: dict[tuple[str, str], int]  # (role, model) -> calls
    tokens: dict[tuple[str, str], tuple[int, int]]  # (role, model) -> (input, output) tokens
    prices: dict[tuple[str, str], float | None]  # (role, model) -> estimated $ (None: no price known)
    assumptions: list[str]
    sizes: dict[str, int]


def plan(checked: Checked, retry: bool = True, known: frozenset[str] | set[str] = frozenset()) -> Plan:
    """The dry run: nothing written, nothing called. ``known``: stage keys an
    earlier run of the same study computes first (``tapir study``): planned
    as reused, their calls not counted again."""
    from tapir.pipeline.run_engine import planning_engine

    cfg = checked.config
    engine = planning_engine(checked, retry)
    items = checked.loaded.items if checked.loaded else []
    n = len(items)
    mean_words = (sum(len(it.prompt.split()) for it in items) / n) if n else 50.0
    in_tokens = int(mean_words * 1.35) + 40
    assumptions = [f"{n} working instructions of ~{in_tokens} prompt tokens each (words x 1.35 + template)"]
    if cfg.curriculum.seed_size is not None:
        seed = min(cfg.curriculum.seed_size, n)
        assumptions.append(f"the seed cut keeps seed_size = {seed} items (the cap; the real count depends on the MFD)")
    elif cfg.mfd.top_fraction is not None:
        seed = max(1, round(cfg.mfd.top_fraction * n))
    else:
        seed = n // 2
        assumptions.append(f"the seed cut keeps about half the items ({seed}); the real count depends on the MFD")
    assumptions.append("each answer uses its role's max_new_tokens x 0.6; expansion asks 1.2 times per draw "
                       "(malformed and duplicate replies are asked again)")
    sizes = {"seed": seed}
    hard = seed
    calls: dict[tuple[str, str], int] = {}
    tokens: dict[tuple[str, str], tuple[int, int]] = {}
    stages: list[PlannedStage] = []

    # A judge and a classifier sample as their generation capability says with
    # their options (what the run passes to the component; their model's
    # generation is refused).
    reply_length: dict[str, int | None] = {}
    for role, role_cfg in (("judge", cfg.judge), ("classifier", cfg.classifier)):
        params = generation(f"{role}s", role_cfg.name, role_cfg.options)
        reply_length[role] = params.max_new_tokens if params is not None else None
        if role_cfg.model is None:
            continue
        if params is not None:
            assumptions.append(f"the {role}'s replies: up to {params.max_new_tokens} tokens, as it asks with its "
                               f"options")
        else:
            assumptions.append(f"the {role}'s replies: their length is not known before it is built ({role} "
                               f"'{role_cfg.name}' does not say: tapir.roles.Sampling); assumed "
                               f"{role_cfg.model.generation.max_new_tokens}")

    def add(role: str, ref: ModelRef | None, count: int, prompt_tokens: int, planned: PlannedStage,
            per_item: int | float = 1, reply_tokens: int | None = None):
        """``count`` calls (``per_item`` per item handled); a node the run resumes
        ("retry failures") asks only its items a re-run retries (engine.resumed_calls).
        ``reply_tokens``: the max_new_tokens these calls are sent with, when
        not the role's own (expansion samples with expansion.generation)."""
        if planned.action == "retry failures":
            # A fresh draw or a failed call is one request per call (no over-asking estimate).
            count = engine.resumed_calls(planned.key, round(count / per_item)) * (
                per_item if isinstance(per_item, int) else 1)
        if ref is None or count <= 0:
            return
        key = (role, ref.model)
        calls[key] = calls.get(key, 0) + count
        out = int((reply_tokens or reply_length.get(role) or ref.generation.max_new_tokens) * 0.6)
        i, o = tokens.get(key, (0, 0))
        tokens[key] = (i + count * prompt_tokens, o + count * out)
        planned.calls[role] = planned.calls.get(role, 0) + count

    refs = {"teacher": cfg.teacher.model, "judge": cfg.judge.model, "classifier": cfg.classifier.model,
            "rewriter": cfg.rewriter.model if cfg.rewriter is not None else None}
    rounds_examples: dict[int, int] = {}
    for step, key, action in engine.plan():
        if key in known and action != "reuse":
            action = "reuse (earlier run)"
        planned = PlannedStage(step.label, key, action)
        stages.append(planned)
        if action.startswith("reuse"):
            continue
        r = step.round
        if step.stage == "teacher_answers":
            count = n if r == 0 else cfg.curriculum.expand_per_round[r - 1]
            if not (cfg.data.use_dataset_answers and r == 0):
                add("teacher", cfg.teacher.model, count, in_tokens, planned)
        elif step.stage == "heldout_answers" and cfg.evaluation.heldout is not None:
            add("teacher", cfg.teacher.model, cfg.evaluation.heldout.limit, in_tokens, planned,  # at most
                reply_tokens=cfg.evaluation.heldout.max_new_tokens)
        elif step.stage == "judge":
            for e in estimate("judges", cfg.judge.name, cfg.judge.options, "judge", n, in_tokens,
                              CallEstimate("judge", n, 2 * in_tokens + 300)):
                add(e.role, refs.get(e.role), e.calls, e.prompt_tokens, planned, _per_item(e.calls, n))
        elif step.stage == "classify":
            add("classifier", cfg.classifier.model, n, in_tokens + 400, planned)
        elif step.stage == "expand":
            add("teacher", cfg.teacher.model, int(cfg.curriculum.expand_per_round[r - 1] * 1.2), in_tokens + 250,
                planned, 1.2, reply_tokens=cfg.expansion.generation.max_new_tokens)
        elif step.stage == "rewrite":
            count = (hard if r == 1 else 0) + cfg.curriculum.expand_per_round[r - 1]
            for e in estimate("rewriters", cfg.rewriter.name, cfg.rewriter.options, "rewrite", count, in_tokens,
                              CallEstimate("rewriter", count, 2 * in_tokens)):
                add(e.role, refs.get(e.role), e.calls, e.prompt_tokens, planned)
        elif step.stage == "train":
            if r == 0:
                examples = n
            else:
                from tapir.pipeline.stages.train import alpha_for, group_weights

                hard += cfg.curriculum.expand_per_round[r - 1]
                alpha = alpha_for(r, cfg.curriculum.alpha, cfg.curriculum.alpha_step)
                w_hard, w_easy = group_weights(hard, n - seed, alpha, cfg.curriculum.weighting)
                examples = (hard if w_hard > 0 else 0) + (n - seed if w_easy > 0 else 0)  # weight 0: left out
                sizes[f"round {r} hard"] = hard
            rounds_examples[r] = examples
            planned.examples = examples
            planned.steps = (cfg.curriculum.max_steps if r > 0 and cfg.curriculum.max_steps is not None
                             else steps_for(cfg, examples))
    if cfg.curriculum.sampling == "task" and any(r > 0 for r in rounds_examples):
        assumptions.append("curriculum.sampling: task up-samples each round's hard pairs to the task mix (known "
                           "after classify; the train stage records it): the counts above take each pair once"
                           + (f", the real count is at most {cfg.curriculum.upsample_limit:g}x"
                              if cfg.curriculum.upsample_limit else ""))
    engine.ctx.store.close()  # read-only: closing it as the last reader removes SQLite's -wal/-shm files
    prices = {key: price(key[1], *tokens.get(key, (0, 0)), options=_model_options(refs.get(key[0])))
              for key in calls}
    return Plan(stages, calls, tokens, prices, assumptions, sizes)


def _per_item(calls: int, n: int) -> int | float:
    """Calls per item: an int when whole (a resumed stage asks that many per item it retries)."""
    if not n:
        return 1
    return calls // n if calls % n == 0 else calls / n


def _model_options(ref: ModelRef | None) -> dict[str, Any]:
    return dict(ref.options) if ref is not None else {}


BATCH_DISCOUNT = 0.5  # OpenAI-style batch endpoints cost half


def render(p: Plan) -> str:
    lines = ["dry run: nothing was written and no model was called.", "", "stages:"]
    for s in p.stages:
        extra = ""
        if s.calls:
            extra += "  calls: " + ", ".join(f"{role} {count:,}" for role, count in s.calls.items())
        if s.examples is not None:
            extra += f"  training examples {s.examples:,}" + (f", ~{s.steps:,} steps" if s.steps else "")
        lines.append(f"  {s.label:<28} {s.action:<22}{extra}")
    lines += ["", "LLM calls, tokens and cost (estimates):"]
    total = 0.0
    priced = True
    for (role, model), count in sorted(p.calls.items()):
        i, o = p.tokens[(role, model)]
        cost = p.prices.get((role, model))
        if cost is None:
            priced = False
            cost_text = "no known price (its backend has none for it)"
        else:
            total += cost
            cost_text = f"${cost:,.2f} (batch API ${cost * BATCH_DISCOUNT:,.2f})"
        lines.append(f"  {role:<10} {model:<32} {count:>9,} calls  {i:>12,} in  {o:>12,} out  {cost_text}")
    lines.append(f"  total: ${total:,.2f} (batch API ${total * BATCH_DISCOUNT:,.2f})"
                 + ("" if priced else " + models without a known price"))
    lines += ["", "sizes: " + ", ".join(f"{k} {v:,}" for k, v in p.sizes.items()), "", "assumptions:"]
    lines += [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)
