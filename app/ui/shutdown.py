"""Live streams must end when the server is asked to stop: uvicorn waits for every open response before it runs the
app's shutdown, and a dashboard tab's server-sent events never end by themselves (Ctrl-C on `make run` would hang
while a tab is open). uvicorn handles SIGINT and SIGTERM itself; this chains onto its handlers, once it has
installed them (the app's startup runs inside them), to set an event the streams watch."""

import asyncio
import signal
from contextlib import suppress
from typing import Any


def watch_stop_signals(stopping: asyncio.Event) -> None:
    """Set `stopping` on SIGINT or SIGTERM, then let the handler in place (uvicorn's) do what it does."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # not uvicorn's (a test's app in process): leave it be

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            with suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(stopping.set)
            previous(signum, frame)

        with suppress(ValueError):  # not the main thread
            signal.signal(sig, handler)
