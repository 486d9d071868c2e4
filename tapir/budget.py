"""A spending ceiling for a run: ``budget.max_cost_usd`` and
``budget.per_role`` (docs/pipeline.md, "Failures, budget and rate limits").

The pipeline makes one :class:`Budget` per run, starting from what the run's
calls already cost (``llm_calls.cost`` of its run id: the budget is not part
of the run id, so raising it resumes the same run), and makes it
:func:`active` while the stages run. An API backend asks :meth:`Budget.reserve`
before each attempt it sends, with an estimate from the prompt and
``max_tokens`` at the model's price; a reservation that would take the spend
(paid + reserved for calls in flight) past a limit is refused with
:class:`OverBudget`, before anything is sent. :meth:`Budget.settle` replaces
the reservation by the call's real cost once it is known.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Mapping

from tapir.errors import TapirError

_active: "Budget | None" = None


class OverBudget(TapirError):
    """A call would take the spend past the budget (the CLI exits 1)."""

    exit_code = 1


class Budget:
    """``max_cost_usd`` for all calls, ``per_role`` for the calls of a role
    (teacher, judge, rewriter, ...); ``spent`` is what was paid before, by role."""

    def __init__(self, max_cost_usd: float | None = None, per_role: Mapping[str, float] | None = None,
                 spent: Mapping[str, float] | None = None):
        self.max_cost_usd = max_cost_usd
        self.per_role = dict(per_role or {})
        self.spent: dict[str, float] = {str(k): float(v) for k, v in (spent or {}).items()}
        self.reserved: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.max_cost_usd is not None or bool(self.per_role)

    def total_spent(self) -> float:
        return sum(self.spent.values())

    def reserve(self, role: str | None, estimate: float) -> None:
        """Hold ``estimate`` USD for a call of ``role`` about to be sent, or
        raise :class:`OverBudget` when it would pass a limit."""
        role = role or "other"
        with self._lock:
            total = self.total_spent() + sum(self.reserved.values()) + estimate
            if self.max_cost_usd is not None and total > self.max_cost_usd + 1e-12:
                raise OverBudget(self._message("budget.max_cost_usd", self.max_cost_usd, self.total_spent(),
                                               estimate))
            limit = self.per_role.get(role)
            mine = self.spent.get(role, 0.0) + self.reserved.get(role, 0.0) + estimate
            if limit is not None and mine > limit + 1e-12:
                raise OverBudget(self._message(f"budget.per_role.{role}", limit, self.spent.get(role, 0.0),
                                               estimate))
            self.reserved[role] = self.reserved.get(role, 0.0) + estimate

    def settle(self, role: str | None, estimate: float, cost: float) -> None:
        """The call reserved with ``estimate`` cost ``cost`` (0 when it was surely not billed)."""
        role = role or "other"
        with self._lock:
            self.reserved[role] = self.reserved.get(role, 0.0) - estimate
            self.spent[role] = self.spent.get(role, 0.0) + cost

    @staticmethod
    def _message(name: str, limit: float, spent: float, estimate: float) -> str:
        return (f"the next call (up to ${estimate:.4f}) would take the spend past {name} (${limit:.2f}; "
                f"${spent:.4f} paid so far)")

    def lines(self) -> list[str]:
        """Spend against the limits, one line each (for summaries)."""
        out = []
        if self.max_cost_usd is not None:
            out.append(f"spend ${self.total_spent():.4f} of budget ${self.max_cost_usd:.2f}")
        for role, limit in sorted(self.per_role.items()):
            out.append(f"  {role}: ${self.spent.get(role, 0.0):.4f} of ${limit:.2f}")
        return out


def active() -> Budget | None:
    """The budget of the run in progress in this process, if it has one."""
    return _active


@contextlib.contextmanager
def use(budget: Budget | None) -> Iterator[Budget | None]:
    """Make ``budget`` the active one for the duration of the block."""
    global _active
    previous = _active
    _active = budget if budget is not None and budget.limited else None
    try:
        yield budget
    finally:
        _active = previous


def spent_by_role(store, run_id: str) -> dict[str, float]:
    """What the calls recorded for ``run_id`` cost, by role."""
    from tapir.store.calls import cost_by_role

    return cost_by_role(store, run_id)


def plan_over(prices: Mapping[tuple[str, str], float | None], max_cost_usd: float | None,
              per_role: Mapping[str, float]) -> list[str]:
    """The limits a dry run's priced plan passes ((role, model) -> $ estimate;
    None for a model without a price, counted as 0), one line each."""
    by_role: dict[str, float] = {}
    for (role, _model), cost in prices.items():
        by_role[role] = by_role.get(role, 0.0) + (cost or 0.0)
    out = []
    total = sum(by_role.values())
    if max_cost_usd is not None and total > max_cost_usd:
        out.append(f"the plan's estimated cost ${total:,.2f} is above budget.max_cost_usd (${max_cost_usd:,.2f})")
    for role, limit in sorted(per_role.items()):
        if by_role.get(role, 0.0) > limit:
            out.append(f"the {role} calls' estimated cost ${by_role[role]:,.2f} is above budget.per_role.{role} "
                       f"(${limit:,.2f})")
    return out
