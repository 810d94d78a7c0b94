"""A tar of workspace members, produced chunk by chunk as the guest takes it.

:mod:`tarfile` is synchronous, so it runs in a worker thread writing into a
small :class:`_ChunkWriter`; full chunks cross to the event loop through a
queue bounded by a semaphore (at most ``depth`` chunks in flight). Memory is
therefore a few chunks plus tarfile's own buffers, whatever the repository
size. Entries are owned by root (uid/gid 0), keep their permission bits and
mtimes, and symlinks are stored as symlinks (never followed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import IO, cast

from banger.errors import BangerError
from banger.workspace.gitfiles import Member

CHUNK_SIZE = 256 * 1024
QUEUE_DEPTH = 8
#: Progress is reported at most this often (and once at the end).
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[Progress], None]


class _Aborted(Exception):
    """The consumer went away: stop writing."""


@dataclass
class _Done:
    pass


class _Bridge:
    """Hands chunks from the worker thread to the event loop, with backpressure."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | _Done | BaseException] = asyncio.Queue()
        self.slots = threading.Semaphore(depth)
        self.depth = depth
        self.stopped = threading.Event()

    def put(self, item: bytes | _Done | BaseException) -> None:  # worker thread
        self.slots.acquire()
        if self.stopped.is_set():
            raise _Aborted
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def stop(self) -> None:  # event loop
        self.stopped.set()
        self.slots.release(self.depth)  # wake a worker blocked on a full queue


class _ChunkWriter:
    """The file object tarfile writes to: coalesces into ``CHUNK_SIZE`` chunks."""

    def __init__(self, bridge: _Bridge, chunk_size: int) -> None:
        self.bridge = bridge
        self.chunk_size = chunk_size
        self.buffer = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= self.chunk_size:
            self.bridge.put(bytes(self.buffer[: self.chunk_size]))
            del self.buffer[: self.chunk_size]
        return len(data)

    def flush_all(self) -> None:
        if self.buffer:
            self.bridge.put(bytes(self.buffer))
            self.buffer.clear()


class _Counting:
    """Reads a file for tarfile, counting bytes for progress."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None]) -> None:
        self.f = f
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.on_read(len(data))
        return data


class _Worker:
    def __init__(
        self,
        members: Sequence[Member],
        bridge: _Bridge,
        chunk_size: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.members = members
        self.bridge = bridge
        self.out = _ChunkWriter(bridge, chunk_size)
        self.progress = progress
        self.files_total = sum(1 for m in members if m.kind != "dir")
        self.bytes_total = sum(m.size for m in members)
        self.files_done = 0
        self.bytes_done = 0
        self.last_report = 0.0

    def report(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not final and now - self.last_report < PROGRESS_INTERVAL:
            return
        self.last_report = now
        snapshot = Progress(self.files_done, self.files_total, self.bytes_done, self.bytes_total)
        self.bridge.loop.call_soon_threadsafe(self.progress, snapshot)

    def read(self, n: int) -> None:
        self.bytes_done += n
        self.report()

    def add(self, tar: tarfile.TarFile, m: Member) -> None:
        info = tar.gettarinfo(str(m.path), arcname=m.arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isreg():
            # O_NOFOLLOW: a file swapped for a symlink since listing is not followed
            fd = os.open(m.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                # the size tarfile stores is the one it read: a file that grows
                # meanwhile is cut there, one that shrinks is an error
                tar.addfile(info, _Counting(f, self.read))
        else:
            tar.addfile(info)
        if m.kind != "dir":
            self.files_done += 1
            self.report()

    def run(self) -> None:
        try:
            # stream mode: tarfile never seeks, it only calls write()
            out = cast(IO[bytes], self.out)
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for m in self.members:
                    try:
                        self.add(tar, m)
                    except FileNotFoundError:
                        continue  # gone since listing: as if it had never been there
                    except OSError as exc:
                        raise BangerError(
                            f"cannot read {m.path}: {exc.strerror or exc}",
                            hint="fix the file (or remove it) and prepare again",
                        ) from exc
            self.out.flush_all()
            self.report(final=True)
            self.bridge.put(_Done())
        except _Aborted:
            return
        except BaseException as exc:
            with contextlib.suppress(_Aborted):
                self.bridge.put(exc)


async def tar_chunks(
    members: Sequence[Member],
    *,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
    depth: int = QUEUE_DEPTH,
) -> AsyncGenerator[bytes, None]:
    """Yield the tar stream of ``members`` in order; raises what the worker raised.

    Closing the iterator early (``aclose``) stops the worker cleanly.
    """
    loop = asyncio.get_running_loop()
    bridge = _Bridge(loop, depth)
    worker = _Worker(members, bridge, chunk_size, progress)
    thread = asyncio.ensure_future(asyncio.to_thread(worker.run))
    try:
        while True:
            item = await bridge.queue.get()
            bridge.slots.release()
            if isinstance(item, _Done):
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        bridge.stop()
        await thread
