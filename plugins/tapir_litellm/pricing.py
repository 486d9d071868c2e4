"""What a call costs: the prices the options give, else litellm's price map
(through litellm only: a self-hosted server has none), for the budget's
reservation before a call and the cost recorded after it."""

from __future__ import annotations

from typing import Any

from tapir_litellm import ratelimit
from tapir_litellm.library import import_litellm

_no_cost_models: set[str] = set()  # models litellm has no price for (skip the look-up)


class Pricing:
    """The prices of one backend's model. ``options``: the backend's
    Options (``input_usd_per_million``, ``output_usd_per_million``);
    ``factor``: what a call costs relative to the synchronous price (0.5
    through a batch API)."""

    def __init__(self, model_name: str, options: Any, transport: str, factor: float):
        self.model_name = model_name
        self.options = options
        self.transport = transport
        self.factor = factor

    def prices(self) -> tuple[float, float] | None:
        """USD per prompt token and per completion token, or None without a price."""
        o = self.options
        if o.input_usd_per_million is not None or o.output_usd_per_million is not None:
            return (o.input_usd_per_million or 0.0) / 1e6, (o.output_usd_per_million or 0.0) / 1e6
        if self.transport != "litellm" or self.model_name in _no_cost_models:
            return None
        table = import_litellm().model_cost
        entry = table.get(self.model_name) or table.get(self.model_name.partition("/")[2])
        if not entry:
            return None
        return float(entry.get("input_cost_per_token") or 0.0), float(entry.get("output_cost_per_token") or 0.0)

    def estimate(self, messages: list[dict[str, Any]], max_tokens: int | None) -> float:
        """The most a request should cost: its prompt (about 4 characters a
        token) and ``max_tokens`` of answer at the model's price (0 without one)."""
        prices = self.prices()
        if prices is None:
            return 0.0
        prompt = ratelimit.estimate_tokens(messages, 0)
        return (prompt * prices[0] + int(max_tokens or 0) * prices[1]) * self.factor

    def cost(self, response: Any) -> float | None:
        """USD cost: from the usage at the options' prices when they are set,
        else from litellm's price map (litellm stamps it on the response);
        None for models it has no price for and on the direct
        OpenAI-compatible path (self-hosted servers have no price)."""
        from tapir_litellm.replies import field

        o = self.options
        if o.input_usd_per_million is not None or o.output_usd_per_million is not None:
            usage = field(response, "usage")
            prompt, completion = field(usage, "prompt_tokens") or 0, field(usage, "completion_tokens") or 0
            return (prompt * (o.input_usd_per_million or 0.0) + completion * (o.output_usd_per_million or 0.0)) / 1e6
        hidden = getattr(response, "_hidden_params", None)  # litellm's response object only; a dict has none
        if not isinstance(hidden, dict):
            return None
        if "response_cost" in hidden:
            cost = hidden["response_cost"]
            return float(cost) if cost is not None else None
        if self.model_name in _no_cost_models:
            return None
        try:
            return float(import_litellm().completion_cost(completion_response=response))
        except Exception:
            _no_cost_models.add(self.model_name)
            return None
