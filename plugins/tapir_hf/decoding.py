"""Per-row sampling, logprobs and stopping for batched ``model.generate``.

transformers' own sampling draws every row from one RNG, so a row's sample
depends on what else is in its batch, and its stop strings and token limit
are per call, not per row. These two hooks make each row independent:

* :class:`RowSampler` (a logits processor, run with ``do_sample=False``)
  records the top-k logprobs of the model's distribution at each step and,
  for rows with temperature > 0, draws the next token from that row's own
  seeded generator (temperature, then top-p), leaving only that token
  possible so the greedy step picks it.
* :class:`RowStopper` (a stopping criterion) ends each row at its own
  ``max_new_tokens`` or at the first of its stop strings, and remembers
  where.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria


class RowSampler(LogitsProcessor):
    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int],
                 top_logprobs: Sequence[int]):
        self.temperatures = list(temperatures)
        self.top_ps = list(top_ps)
        self.seeds = list(seeds)
        self.top_logprobs = list(top_logprobs)
        self.sampled = [r for r, t in enumerate(self.temperatures) if t > 0]
        self.k = max(self.top_logprobs, default=0)
        self._generators: dict[int, torch.Generator] = {}
        # per step: logprob of the chosen token [B], top-k logprobs and ids [B, k]
        self._steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def active(self) -> bool:
        return bool(self.sampled) or self.k > 0

    def _generator(self, row: int, device) -> torch.Generator:
        gen = self._generators.get(row)
        if gen is None:
            gen = self._generators[row] = torch.Generator(device=device).manual_seed(self.seeds[row])
        return gen

    def _draw(self, logits: torch.Tensor, row: int) -> torch.Tensor:
        probs = torch.softmax(logits / self.temperatures[row], dim=-1)
        top_p = self.top_ps[row]
        gen = self._generator(row, logits.device)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p  # the most likely token always stays
            pick = torch.multinomial(sorted_probs * keep, 1, generator=gen)
            return order[pick]
        return torch.multinomial(probs, 1, generator=gen)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = scores.argmax(-1)
        if self.sampled:
            for row in self.sampled:
                chosen[row] = self._draw(scores[row].float(), row)[0]
        if self.k:
            logprobs = torch.log_softmax(scores.float(), dim=-1)
            top_values, top_ids = logprobs.topk(self.k, dim=-1)
            self._steps.append((logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1), top_values, top_ids))
        if self.sampled:
            forced = torch.full_like(scores, float("-inf"))
            forced[self.sampled, chosen[self.sampled]] = 0.0
            rows = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
            rows[self.sampled] = True
            scores = torch.where(rows.unsqueeze(-1), forced, scores)
        return scores

    def logprobs(self, row: int, n: int) -> list[tuple[float, list[tuple[int, float]]]]:
        """(logprob of the chosen token, [(token id, logprob)] top-k) for the
        first ``n`` generated tokens of ``row``."""
        k = self.top_logprobs[row]
        out = []
        for chosen, values, ids in self._steps[:n]:
            out.append((float(chosen[row]), list(zip(ids[row, :k].tolist(), values[row, :k].tolist()))))
        return out


class RowStopper(StoppingCriteria):
    def __init__(self, tokenizer, prompt_width: int, max_new: Sequence[int], stops: Sequence[Sequence[str]]):
        self.tokenizer = tokenizer
        self.width = prompt_width
        self.max_new = list(max_new)
        self.stops = [tuple(s for s in row if s) for row in stops]
        longest = max((len(s) for row in self.stops for s in row), default=0)
        self.tail = 4 * longest + 4  # tokens to decode: enough for the longest stop string
        self.ends: list[int | None] = [None] * len(self.max_new)

    @property
    def active(self) -> bool:
        return any(self.stops) or len(set(self.max_new)) > 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        n = input_ids.shape[1] - self.width
        done = []
        for row, end in enumerate(self.ends):
            if end is None:
                hit = n >= self.max_new[row]
                if not hit and self.stops[row]:
                    tail = input_ids[row, max(self.width, input_ids.shape[1] - self.tail):]
                    text = self.tokenizer.decode(tail, skip_special_tokens=True)
                    hit = any(s in text for s in self.stops[row])
                if hit:
                    self.ends[row] = n
            done.append(self.ends[row] is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def length(self, row: int, generated: int) -> int:
        """How many of the row's generated tokens count (the rest is padding)."""
        end = self.ends[row]
        return generated if end is None else min(end, generated)
