"""What ends the sending of one ``generate`` call early, and what becomes
of the requests in flight then.

A :class:`StopSignal` is set by the first permanent failure (out of quota,
key refused, no such model, over the budget: every other request would fail
the same way) or by the caller's stop (the stage raised). It is set on the
event loop; the requests not yet sent are then never sent, and a backoff
wait ends at once. After the caller's stop, :func:`drain_after_failure`
waits for the requests already sent (they are paid for) and has them
recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue

from tapir import progress
from tapir.roles import Completion, OnResult, deliver_after_failure

from tapir_litellm.loop import get_loop
from tapir_litellm.retry import PERMANENT

_log = logging.getLogger("tapir_litellm.stop")
STOPPED = "stopped"  # the failure cause of the caller's stop (and of a request it left unsent)


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


def drain_after_failure(future: concurrent.futures.Future, done: queue.SimpleQueue, stop: StopSignal,
                        on_result: OnResult | None, timeout: float, model: str) -> None:
    """After ``on_result`` raised (the stage stopped): send nothing more,
    wait (at most ``timeout``, one attempt's) for the requests in flight,
    and hand those that were sent to :func:`~tapir.roles.deliver_after_failure`
    (the cache records them without handing them to the stage again).
    ``future``: the loop's run of the batch; ``done``: its (index, completion) queue."""
    if future.done():
        return
    get_loop().call_soon_threadsafe(stop.set, Completion(
        error="the caller stopped", failure_kind=PERMANENT, failure_cause=STOPPED))
    for wait in (1.0, timeout):
        try:
            future.result(timeout=wait)
            break
        except concurrent.futures.TimeoutError:
            if wait == timeout:  # given up on: a re-run asks again
                future.cancel()
            else:
                progress.say(f"   {model}: the stage stopped; waiting for the requests in flight (paid for) "
                             f"to be recorded, at most {timeout:g} s (Ctrl-C: stop now)")
        except BaseException:  # Ctrl-C, or the loop side broke: give up on what is still in flight
            future.cancel()
            break
    sent = []
    while True:
        try:
            i, completion = done.get_nowait()
        except queue.Empty:
            break
        if completion.attempts:  # sent at least once (never-sent ones have no attempt to record)
            sent.append((i, completion))
    try:
        deliver_after_failure(on_result, sent)
    except Exception as exc:  # the caller's exception is the one raised; this one is said
        _log.warning("%s: of %d answer(s) that were in flight, some could not be recorded (%s: %s); "
                     "a re-run asks those again", model, len(sent), type(exc).__name__, exc)
