"""One asyncio event loop per process, in a daemon thread, for API calls.

All API backends share it, so a per-server concurrency limit
(:mod:`tapir_litellm.adaptive`) holds across backend instances and across
threads that call ``generate`` at the same time, and litellm's cached async
HTTP clients always meet the loop they were made on.
Results travel back to the calling thread through a queue, so callbacks run
in the caller's thread.
"""

from __future__ import annotations

import asyncio
import threading

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="tapir-api-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop

