"""Progress from worker threads into an operation's event stream.

Kernel pulls and image builds run blocking code in a thread
(``asyncio.to_thread``); their progress callbacks fire there. This bridges
each call to :meth:`OpHandle.event` on the daemon's loop, throttled so a
download reporting every 64 KiB does not write thousands of events.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from banger.daemon.ops import OpHandle

#: At most one byte-count event per this many seconds (text lines always pass).
MIN_INTERVAL = 1.0


class ThreadProgress:
    def __init__(self, op: OpHandle, loop: asyncio.AbstractEventLoop) -> None:
        self._op = op
        self._loop = loop
        self._last: dict[str, float] = {}

    def _emit(self, message: str, data: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self._op.event("progress", message, data), self._loop
        )
        future.result(timeout=30)

    def line(self, text: str) -> None:
        """A ``Progress`` callback of ``banger.images`` (one line per step)."""
        if text.strip():
            self._emit(text.strip(), {})

    def counted(self, stage: str, done: int | None, total: int | None) -> None:
        """A ``Progress`` callback of ``banger.kernels`` (stage, bytes done, total)."""
        now = time.monotonic()
        finished = done is not None and total is not None and done >= total
        if done is not None and not finished and now - self._last.get(stage, 0.0) < MIN_INTERVAL:
            return
        self._last[stage] = now
        if done is not None and total:
            message = f"{stage}: {done * 100 // total}% of {total // (1024 * 1024)} MiB"
        elif done is not None:
            message = f"{stage}: {done // (1024 * 1024)} MiB"
        else:
            message = stage
        self._emit(message, {"stage": stage, "done": done, "total": total})
