"""Progress from worker threads into an operation's event stream.

Kernel pulls and image builds run blocking code in a thread
(``asyncio.to_thread``); their progress callbacks fire there. This bridges
each call to :meth:`OpHandle.event` on the daemon's loop, throttled so a
download reporting every 64 KiB does not write thousands of events.
:class:`FileProgress` does the same for a workspace copy's file counts, from
the loop (over SSH) or from the thread writing it onto a work disk.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from banger.daemon.ops import OpHandle
from banger.workspace.tarstream import Progress

#: At most one byte-count event per this many seconds (text lines always pass).
MIN_INTERVAL = 1.0
#: At most one file-count event of a workspace copy per this many seconds.
FILES_INTERVAL = 2.0
MIB = 1024 * 1024


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


class FileProgress:
    """A workspace copy's file and byte counts as throttled ``progress`` events.

    Callable from any thread (it hops onto ``loop``); the last call (all files
    done) is left to the caller's own summary event. ``flush`` waits for the
    events already sent.
    """

    def __init__(self, op: OpHandle, loop: asyncio.AbstractEventLoop) -> None:
        self.op = op
        self.loop = loop
        self.last = loop.time()
        self.pending: set[asyncio.Future[None]] = set()

    def __call__(self, p: Progress) -> None:
        self.loop.call_soon_threadsafe(self._on_loop, p)

    def _on_loop(self, p: Progress) -> None:
        now = self.loop.time()
        if now - self.last < FILES_INTERVAL or p.files_done >= p.files_total:
            return
        self.last = now
        message = (
            f"{p.files_done}/{p.files_total} files, "
            f"{p.bytes_done / MIB:.1f}/{p.bytes_total / MIB:.1f} MiB"
        )
        task = asyncio.ensure_future(self.op.event("progress", message, asdict(p)))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def flush(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)
