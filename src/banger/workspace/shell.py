"""What the workspace code needs from a guest: run a POSIX sh script, stream in or out.

:class:`GuestShell` is the seam between the workspace logic and the transport.
The VM service passes :class:`SSHGuestShell` around the asyncssh connection it
opened with the pinned host key; tests use the same class against a real sshd.
Scripts are run as ``sh -c <script>`` so the guest user's login shell never
matters, and their values are quoted in the text (:mod:`.guest_scripts`).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import asyncssh

from banger.errors import BangerError
from banger.guest.ssh import ExecResult, SSHError

#: Bytes of guest stderr kept for error messages.
STDERR_LIMIT = 64 * 1024
_READ_SIZE = 256 * 1024


class GuestShell(Protocol):
    async def run(self, script: str, *, stdin: bytes | None = None) -> ExecResult:
        """Run ``script`` with ``stdin`` (small), collecting stdout and stderr."""
        ...

    async def run_feeding(self, script: str, chunks: AsyncIterator[bytes]) -> ExecResult:
        """Run ``script`` with its stdin streamed from ``chunks`` (written as they come).

        If ``chunks`` raises, the error propagates and the script is cut off
        without a clean EOF: it must not act on what it received.
        """
        ...

    async def run_draining(
        self, script: str, sink: Callable[[bytes], Awaitable[None]]
    ) -> ExecResult:
        """Run ``script``, handing its stdout to ``sink`` chunk by chunk (``stdout`` is empty)."""
        ...


def sh_command(script: str) -> str:
    """The exec request text: ``sh -c <script>``, quoted."""
    return shlex.join(["sh", "-c", script])


async def _collect(stream: asyncssh.SSHReader[bytes], limit: int | None) -> bytes:
    data = bytearray()
    while chunk := await stream.read(_READ_SIZE):
        data += chunk
        if limit is not None and len(data) > limit:
            del data[: len(data) - limit]  # keep the tail: the error is usually last
    return bytes(data)


def _status(process: asyncssh.SSHClientProcess[bytes]) -> int:
    status = process.exit_status
    if status is None:  # killed by a signal, or the channel closed without a status
        return -1 if process.exit_signal is not None else 255
    return status


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class SSHGuestShell:
    """:class:`GuestShell` over an open asyncssh connection (not closed here)."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    async def _start(self, script: str) -> asyncssh.SSHClientProcess[bytes]:
        try:
            return await self._conn.create_process(sh_command(script), encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(f"cannot start a command in the guest: {exc}") from None

    async def run(self, script: str, *, stdin: bytes | None = None) -> ExecResult:
        async def once() -> AsyncIterator[bytes]:
            if stdin:
                yield stdin

        return await self.run_feeding(script, once())

    async def run_feeding(self, script: str, chunks: AsyncIterator[bytes]) -> ExecResult:
        process = await self._start(script)
        out = asyncio.create_task(_collect(process.stdout, None))
        err = asyncio.create_task(_collect(process.stderr, STDERR_LIMIT))
        try:
            try:
                async for chunk in chunks:
                    process.stdin.write(chunk)
                    await process.stdin.drain()
                process.stdin.write_eof()
            except (BrokenPipeError, ConnectionError, asyncssh.Error):
                pass  # the guest side stopped reading (it failed): its stderr says why
            finally:
                await _aclose(chunks)
            await process.wait_closed()
            return ExecResult(_status(process), await out, await err)
        finally:
            process.close()
            for task in (out, err):
                task.cancel()
            await asyncio.gather(out, err, return_exceptions=True)

    async def run_draining(
        self, script: str, sink: Callable[[bytes], Awaitable[None]]
    ) -> ExecResult:
        process = await self._start(script)
        err = asyncio.create_task(_collect(process.stderr, STDERR_LIMIT))
        try:
            process.stdin.write_eof()
            while chunk := await process.stdout.read(_READ_SIZE):
                await sink(chunk)
            await process.wait_closed()
            return ExecResult(_status(process), b"", await err)
        finally:
            process.close()
            err.cancel()
            await asyncio.gather(err, return_exceptions=True)


class GuestCommandFailed(BangerError):
    """A workspace step failed inside the guest."""

    http_status = 502


def check(result: ExecResult, what: str, hint: str | None = None) -> ExecResult:
    """Raise a one-line error with the tail of the guest's stderr unless it exited 0."""
    if result.exit_status == 0:
        return result
    lines = [ln.strip() for ln in result.err.splitlines() if ln.strip()]
    tail = " | ".join(lines[-3:]) or f"exit status {result.exit_status}"
    raise GuestCommandFailed(f"{what} failed in the guest: {tail}", hint=hint)
