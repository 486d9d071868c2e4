"""expand: the teacher writes one new instruction per draw (same task type,
similar difficulty); malformed ones and near-duplicates of everything
already in the pool are asked again with a new sample index, up to
``expansion.max_attempts_factor`` tries. A failed call is not a try: the
draw stays failed and is retried with the same request on re-run. A draw
whose tries all failed (malformed or duplicates) is asked again on re-run
with fresh sample indices (tapir.pipeline.draws), up to failures.max_draws."""

from __future__ import annotations

import random
from collections.abc import Sequence

from tapir import progress
from tapir.pipeline.data import item_id
from tapir.pipeline.job import Job
from tapir.pipeline.stages.resample import draws_for, expanded_before, pool_for
from tapir.roles import Completion, GenerationParams, Item


# Accepted new instructions written per transaction (one each before: a commit per item).
_STORE_EVERY = 64


class _Without(Sequence):
    """``[x for i, x in enumerate(items) if i not in skip]`` without building
    it: ``random.sample`` draws the same elements from it as from the list."""

    def __init__(self, items: list, skip: list[int]):
        self.items, self.skip = items, sorted(skip)

    def __len__(self) -> int:
        return len(self.items) - len(self.skip)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        for s in self.skip:  # one entry, unless the pool holds an id twice
            if s <= i:
                i += 1
            else:
                break
        return self.items[i]


class Expand:
    name = "expand"
    # expand_per_round and the weights: the draws are computed again here (resample.draws_for).
    reads = ("expansion", "teacher", "seed", "curriculum.expand_per_round", "resample.weights")

    @staticmethod
    def upstream(step):
        r = step.round
        return (("ingest", 0), ("seed_cut", step.option("cut", 0)), ("classify", 0),
                *(("expand", i) for i in range(1, r)), ("resample", r))
    version = "2"  # 2: replies that repeat the given block before their own are parsed
    max_failure_rate = 0.2

    def run(self, job: Job) -> None:
        from tapir.dedup import pool_filter

        ctx = job.ctx
        cfg = ctx.config.expansion
        r = job.round
        draws = draws_for(job, r)
        pool = pool_for(job, r)
        existing = {it.meta.get("draw"): it for it in ctx.items(job.key)}
        texts = [it.instruction for it in ctx.items(job.scope("ingest"))]
        texts += [it.instruction for it in expanded_before(job, r)]
        texts += [it.instruction for it in existing.values()]
        embed = ctx.encoder(cfg.encoder).embed if cfg.dedup == "embedding" else None
        # The filter kept from the round before holds all but this round's new pool texts.
        dedup = pool_filter(cfg.dedup, cfg.dedup_threshold, texts, embed=embed,
                            embed_key=cfg.encoder if embed else None)
        rng = random.Random(ctx.config.seed * 1000 + r)
        by_type: dict[str, list[Item]] = {}
        for it in pool:
            by_type.setdefault(it.task_type or "Others", []).append(it)
        groups = []
        positions: dict[str, dict[str, list[int]]] = {}
        for task, members in by_type.items():
            at = positions[task] = {}
            for i, it in enumerate(members):
                at.setdefault(it.id, []).append(i)
        for seed_item in draws:
            task = seed_item.task_type or "Others"
            # The same-type pool without the seed item, as a view (no copy per draw).
            same = _Without(by_type.get(task, []), positions.get(task, {}).get(seed_item.id, []))
            others = rng.sample(same, min(len(same), cfg.examples_in_prompt - 1))
            groups.append((seed_item.task_type or "Others", [seed_item, *others]))
        for j in existing:
            job.ok(f"draw-{j}")
        pending = [j for j in job.todo(f"draw-{j}" for j in range(len(draws)))]
        pending = [int(d.split("-")[1]) for d in pending if int(d.split("-")[1]) not in existing]
        attempts = {j: 0 for j in pending}
        max_attempts = max(1, int(cfg.max_attempts_factor))
        # A re-run's fresh draw continues past the sample indices the earlier draws used.
        first = {j: job.draw(f"draw-{j}") * max_attempts for j in pending}
        from tapir.pipeline.draws import reproduces

        same_again = reproduces(ctx.config.teacher.model.model if ctx.config.teacher.model else None,
                                cfg.generation.temperature)
        stats = {"malformed": 0, "duplicates": 0, "call_errors": 0, "calls": 0}
        g = cfg.generation
        params = GenerationParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                  seed=ctx.config.seed)
        accepted: list[tuple[int, Item, Completion]] = []

        def store_accepted() -> None:
            # The accepted texts are written together (one transaction), then marked ok in the
            # order they came: before any failure is recorded, so the outcomes keep their order.
            if accepted:
                ctx.add_items(job.key, [new for _, new, _ in accepted], "expanded", r)
                for j, _, completion in accepted:
                    job.ok(f"draw-{j}", completion.call_id, attempts[j])
                    bar.update()
                accepted.clear()

        with progress.bar(f"expanding (round {r})", len(pending)) as bar:
            while pending:
                completions = ctx.teacher.create_instructions(
                    [groups[j] for j in pending], [sample_index(r, j, first[j] + attempts[j]) for j in pending],
                    params)
                stats["calls"] += len(pending)
                retry = []
                # The pass's usable texts go through the filter at once, in draw order: the same
                # verdicts as one accept() each (a text is checked against those accepted before it).
                cleaned = [ctx.teacher.clean_instruction(c.text) if c.ok else None for c in completions]
                verdicts = iter(dedup.accept_many([t for t in cleaned if t is not None]))
                for j, completion, text in zip(pending, completions, cleaned):
                    if not completion.ok:
                        stats["call_errors"] += 1
                        store_accepted()
                        job.fail_completion(f"draw-{j}", completion, "new instruction")
                        bar.update()
                        continue
                    attempts[j] += 1
                    problem = None
                    if text is None:
                        stats["malformed"] += 1
                        problem = ("malformed", "the reply held no usable instruction")
                    elif not next(verdicts):
                        stats["duplicates"] += 1
                        problem = ("duplicate", "a near-duplicate of an instruction in the pool")
                    if problem is None:
                        task_type, examples = groups[j]
                        new = Item(item_id(text), text, "", None, task_type,
                                   {"draw": j, "seed_id": examples[0].id, "examples": [e.id for e in examples]})
                        accepted.append((j, new, completion))
                        if len(accepted) >= _STORE_EVERY:
                            store_accepted()
                    elif attempts[j] < max_attempts:
                        retry.append(j)
                    else:
                        store_accepted()
                        job.fail(f"draw-{j}", f"{problem[1]} after {attempts[j]} tries", problem[0],
                                 call_id=completion.call_id, attempts=attempts[j], content=True,
                                 reproduces=same_again)
                        bar.update()
                store_accepted()
                pending = retry
        job.info.update(requested=len(draws), accepted=len(ctx.items(job.key)), **stats)


def sample_index(round: int, draw: int, attempt: int) -> int:
    """The sample index of a creation request: distinct per (round, draw,
    attempt), so an over-sampled seed drawn k times (same prompt, e.g. Table
    7's single example) gets k different samples instead of one cached reply.
    ``attempt`` counts the tries of every draw (fresh draws on re-run
    included), at most 99."""
    return (round * 1_000_000 + draw) * 100 + min(attempt, 99)
