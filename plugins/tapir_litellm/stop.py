"""What ends the sending of one ``generate`` call early: the first
permanent failure (out of quota, key refused, no such model, over the
budget: every other request would fail the same way) or the caller's stop
(the stage raised). Set on the event loop; the requests not yet sent are
then never sent, and a backoff wait ends at once."""

from __future__ import annotations

import asyncio

from tapir.roles import Completion


class StopSignal:
    """Falsy until :meth:`set`; ``first`` is the completion that stopped it."""

    def __init__(self) -> None:
        self.first: Completion | None = None
        self._event = asyncio.Event()  # bound to the loop on first wait

    def __bool__(self) -> bool:
        return self.first is not None

    def set(self, completion: Completion) -> None:
        """Stop with ``completion`` as the cause (the first one set stays). On the loop only."""
        if self.first is None:
            self.first = completion
            self._event.set()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when stopped meanwhile."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except asyncio.TimeoutError:
            pass
