"""Expansion: the teacher writes new instructions like the re-sampled seeds
(same task type, similar difficulty); malformed ones and near-duplicates of
the pool are dropped."""

from __future__ import annotations

import random
from typing import Sequence

from tapir import progress
from tapir.pipeline.context import Context
from tapir.pipeline.data import item_id
from tapir.roles import Item


class NearDuplicates:
    """Rejects texts too similar to anything accepted so far (ROUGE-L F1 or
    cosine of MiniLM embeddings above a threshold)."""

    def __init__(self, pool: Sequence[str], method: str, threshold: float):
        self.method = method
        self.threshold = threshold
        self.texts = list(pool)
        self._vectors = None
        if method == "rouge":
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
            self._tokens = [self._scorer._tokenizer.tokenize(t) for t in self.texts]
        elif method == "embedding":
            from tapir_hf.encoder import embed

            self._embed = embed
            self._vectors = embed(self.texts) if self.texts else None

    def similarity(self, text: str) -> float:
        if self.method == "none" or not self.texts:
            return 0.0
        if self.method == "rouge":
            from rouge_score.rouge_scorer import _score_lcs

            tokens = self._scorer._tokenizer.tokenize(text)
            return max((_score_lcs(ref, tokens).fmeasure for ref in self._tokens), default=0.0)
        vector = self._embed([text])
        return float((self._vectors @ vector[0]).max())

    def add(self, text: str) -> None:
        self.texts.append(text)
        if self.method == "rouge":
            self._tokens.append(self._scorer._tokenizer.tokenize(text))
        elif self.method == "embedding":
            import numpy as np

            vector = self._embed([text])
            self._vectors = vector if self._vectors is None else np.concatenate([self._vectors, vector])

    def accept(self, text: str) -> bool:
        if self.similarity(text) >= self.threshold:
            return False
        self.add(text)
        return True


def expand(ctx: Context, draws: Sequence[Item], pool: Sequence[Item], round: int, info: dict) -> list[Item]:
    """One new instruction per draw. A draw whose reply is malformed or a
    near-duplicate is asked again with a new sample index, up to
    ``expansion.max_attempts_factor`` tries. Returns the accepted items (also
    stored with origin 'expanded')."""
    from tapir_teachers.teacher import clean_instruction

    cfg = ctx.config.expansion
    existing = {it.meta.get("draw"): it for it in ctx.items("origin = 'expanded' and round = ?", [round])}
    all_texts = [r[0] for r in ctx.store.execute("select instruction from items where run_id = ?", [ctx.run.id])]
    dedup = NearDuplicates(all_texts, cfg.dedup, cfg.dedup_threshold)
    rng = random.Random(ctx.config.seed * 1000 + round)
    by_type: dict[str, list[Item]] = {}
    for it in pool:
        by_type.setdefault(it.task_type or "Others", []).append(it)
    groups = []
    for j, seed_item in enumerate(draws):
        same = [it for it in by_type.get(seed_item.task_type or "Others", []) if it.id != seed_item.id]
        others = rng.sample(same, min(len(same), cfg.examples_in_prompt - 1))
        groups.append((seed_item.task_type or "Others", [seed_item, *others]))

    pending = [j for j in range(len(draws)) if j not in existing]
    attempts = {j: 0 for j in pending}
    max_attempts = max(1, int(cfg.max_attempts_factor))
    stats = {"malformed": 0, "duplicates": 0, "failed": 0, "calls": 0}
    accepted: list[Item] = []
    with progress.bar(f"expanding (round {round})", len(pending)) as bar:
        while pending:
            completions = ctx.teacher.create_instructions(
                [groups[j] for j in pending], [round * 1000 + attempts[j] for j in pending]
            )
            stats["calls"] += len(pending)
            retry = []
            for j, completion in zip(pending, completions):
                attempts[j] += 1
                text = clean_instruction(completion.text) if completion.ok else None
                if text is None:
                    stats["malformed" if completion.ok else "failed"] += 1
                elif not dedup.accept(text):
                    stats["duplicates"] += 1
                    text = None
                if text is not None:
                    task_type, examples = groups[j]
                    new = Item(
                        item_id(text), text, "", None, task_type,
                        {"draw": j, "seed_id": examples[0].id, "examples": [e.id for e in examples]},
                    )
                    ctx.add_items([new], "expanded", round)
                    accepted.append(new)
                    bar.update()
                elif attempts[j] < max_attempts:
                    retry.append(j)
                else:
                    bar.update()
            pending = retry
    info.update(requested=len(draws), accepted=len(existing) + len(accepted), **stats)
    return list(existing.values()) + accepted
