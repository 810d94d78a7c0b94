"""A small asyncio client for QEMU's machine protocol (QMP) over a Unix socket.

QMP is JSON objects, one per line: a greeting on connect, then
``qmp_capabilities`` to leave negotiation mode, then commands answered with
``{"return": ...}`` or ``{"error": {"class", "desc"}}``. Events
(``SHUTDOWN``, ``POWERDOWN``, ``STOP``...) may arrive at any time, also between
a command and its answer; a reader task routes answers by ``id`` and queues
events.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from banger.vmm.base import VMMError

log = logging.getLogger(__name__)

#: Replies like ``query-qmp-schema`` run to hundreds of kilobytes on one line.
_LINE_LIMIT = 16 * 1024 * 1024


class QMPError(VMMError):
    """QEMU answered a command with an error, or the connection failed."""

    def __init__(self, message: str, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class


class QMPClient:
    """One QMP connection. Use :meth:`connect` (or ``async with await QMPClient.connect(...)``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader_task: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None
        self.greeting: dict[str, Any] = {}

    @classmethod
    async def connect(cls, path: Path, timeout: float = 5.0) -> QMPClient:
        """Connect, read the greeting and negotiate capabilities, all within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
                client = cls(reader, writer)
                try:
                    await client._handshake()
                except BaseException:
                    await client.close()
                    raise
        except TimeoutError:
            raise QMPError(f"QMP socket {path} did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise QMPError(f"cannot connect to QMP socket {path}: {exc.strerror or exc}") from None
        return client

    async def _handshake(self) -> None:
        line = await self._reader.readline()
        if not line:
            raise QMPError("QMP connection closed before the greeting")
        greeting = json.loads(line)
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {line[:200]!r}")
        self.greeting = greeting["QMP"]
        self._reader_task = asyncio.create_task(self._read_loop(), name="qmp-reader")
        await self.execute("qmp_capabilities")

    async def _read_loop(self) -> None:
        reason = "QMP connection closed"
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = json.loads(line)
                if "event" in message:
                    self._events.put_nowait(message)
                    continue
                future = self._pending.pop(str(message.get("id")), None)
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    log.debug("QMP: unmatched message %s", message)
        except (OSError, ValueError) as exc:
            reason = f"QMP connection failed: {exc}"
        finally:
            self._closed_reason = reason
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(QMPError(reason))
            self._pending.clear()

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, fds: Sequence[int] = ()
    ) -> Any:
        """Run ``command``; its ``return`` value, or :class:`QMPError` with QEMU's message.

        ``fds`` travel with the command as SCM_RIGHTS (``getfd``, ``add-fd``).
        """
        if self._closed_reason is not None:
            raise QMPError(self._closed_reason)
        request_id = str(next(self._ids))
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            data = json.dumps(request).encode() + b"\n"
            if fds:
                self._send_with_fds(data, fds)
            else:
                self._writer.write(data)
                await self._writer.drain()
            reply = await future
        except OSError as exc:
            raise QMPError(f"QMP {command}: connection failed: {exc}") from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise QMPError(f"QMP {command}: {error.get('desc', error)}", error.get("class"))
        return reply.get("return")

    def _send_with_fds(self, data: bytes, fds: Sequence[int]) -> None:
        """One ``sendmsg`` carrying the command's bytes and the descriptors.

        QEMU takes descriptors from the message that carries the command, so the
        request cannot go through the stream's buffer. asyncio's transport socket
        has no ``sendmsg``: a duplicate of the connection's descriptor does it
        (left non-blocking; a short message into an empty buffer goes at once).
        """
        if self._writer.transport.get_write_buffer_size():
            raise QMPError("QMP: cannot pass a descriptor while output is still buffered")
        sock = self._writer.get_extra_info("socket")
        with socket.socket(fileno=os.dup(sock.fileno())) as raw:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            try:
                sent = raw.sendmsg([data], ancillary)
            except BlockingIOError:
                sent = 0
            if sent != len(data):
                raise QMPError("QMP: the socket did not take the whole request with descriptors")

    async def wait_event(self, *names: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event named one of ``names`` (earlier others are dropped); None on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self._events.get()
                    if event.get("event") in names:
                        return event
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> QMPClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
