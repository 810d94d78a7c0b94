"""The client side of the daemon's exec WebSocket.

An asyncio core (:func:`open_exec` → :class:`AsyncExec`, :func:`run_exec`)
and blocking wrappers on :class:`banger.client.BangerClient` (``exec``).
The framing is documented in :data:`banger.daemon.api.vms.exec.FRAMING`.

Imported only by code that runs commands (``websockets`` and ``asyncio`` cost
tens of milliseconds that ``banger vm list`` should not pay).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal as signal_module
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from banger import errors
from banger.errors import BangerError, DaemonUnavailable
from banger.paths import check_private_dir

#: Output the client acknowledges at once (the daemon sends at most 1 MiB ahead).
ACK_EVERY = 256 * 1024
#: Largest frame accepted from the daemon (its output frames are 64 KiB + 1).
MAX_FRAME = 4 * 1024 * 1024
STDIN_CHUNK = 64 * 1024


class ExecConnectionLost(BangerError):
    """The exec WebSocket ended without an exit or error frame."""


@dataclass(frozen=True)
class ExecResult:
    """How a command ended, and its output when it was collected."""

    exit_code: int | None
    signal: str | None
    timed_out: bool
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def status(self) -> int:
        """A shell's idea of the status: the exit code, or 128 + the signal's number."""
        if self.exit_code is not None:
            return self.exit_code
        try:
            return 128 + int(signal_module.Signals["SIG" + (self.signal or "KILL")])
        except KeyError:
            return 255

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


#: Error kinds rebuilt as themselves (constructed from message and hint); others: BangerError.
_KINDS = ("InvalidArgument", "NotFound", "Conflict", "DaemonUnavailable", "HelperError",
          "PermissionDenied")  # fmt: skip


class DaemonGone(DaemonUnavailable):
    """Nothing answered on the daemon socket (:class:`banger.client.DaemonNotReachable`
    is raised instead by :class:`~banger.client.BangerClient`'s exec methods)."""


def _raise_remote(data: dict[str, Any]) -> None:
    """Raise the daemon's error frame as the :mod:`banger.errors` class it names."""
    message, hint, kind = str(data.get("error")), data.get("hint"), str(data.get("kind"))
    hint = hint if isinstance(hint, str) else None
    cls = getattr(errors, kind, None) if kind in _KINDS else None
    if isinstance(cls, type) and issubclass(cls, BangerError):
        raise cls(message, hint)
    raise BangerError(message, hint)


class AsyncExec:
    """A command running in a VM: feed its stdin, read its output, wait for its end."""

    def __init__(self, ws: ClientConnection, exec_id: str) -> None:
        self.ws = ws
        self.exec_id = exec_id
        self.result: ExecResult | None = None
        self._unacked = 0
        self._send_lock = asyncio.Lock()

    async def _send(self, message: str | bytes) -> None:
        async with self._send_lock:
            # The command ended (or the daemon left) while this was on its way: not
            # an error here; events() reports how it ended, or that it did not.
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(message)

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the command's stdin (waits while the guest is not reading)."""
        for i in range(0, len(data), STDIN_CHUNK):
            await self._send(b"\x00" + data[i : i + STDIN_CHUNK])

    async def close_stdin(self) -> None:
        await self._send(json.dumps({"type": "eof"}))

    async def resize(self, rows: int, cols: int) -> None:
        await self._send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    async def signal(self, name: str) -> None:
        """Send SIG``name`` (``INT``, ``TERM``…) to the command's processes."""
        await self._send(json.dumps({"type": "signal", "signal": name}))

    async def events(self) -> AsyncIterator[tuple[str, bytes]]:
        """``("stdout"|"stderr", data)`` until the command ends (then :attr:`result` is set)."""
        while self.result is None:
            try:
                message = await self.ws.recv()
            except ConnectionClosed:
                raise ExecConnectionLost(
                    "the exec connection to bangerd closed before the command ended",
                    hint="see the daemon log (banger system logs)",
                ) from None
            if isinstance(message, bytes):
                if not message:
                    continue
                self._unacked += len(message) - 1
                if self._unacked >= ACK_EVERY:
                    acked, self._unacked = self._unacked, 0
                    await self._send(json.dumps({"type": "ack", "bytes": acked}))
                yield ("stdout" if message[0] == 1 else "stderr"), message[1:]
                continue
            data = json.loads(message)
            if data.get("type") == "exit":
                self.result = ExecResult(
                    data.get("exit_code"), data.get("signal"), bool(data.get("timed_out"))
                )
            elif data.get("type") == "error":
                _raise_remote(data)

    async def wait(self) -> ExecResult:
        """Collect the remaining output and return how the command ended."""
        out: list[bytes] = []
        err: list[bytes] = []
        async for stream, data in self.events():
            (out if stream == "stdout" else err).append(data)
        assert self.result is not None
        self.result = ExecResult(
            self.result.exit_code,
            self.result.signal,
            self.result.timed_out,
            b"".join(out),
            b"".join(err),
        )
        return self.result

    async def close(self) -> None:
        """Leave; a command still running is killed by the daemon."""
        await self.ws.close()

    async def __aenter__(self) -> AsyncExec:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def exec_request(
    command: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    pty: tuple[int, int] | None = None,
    term: str = "xterm-256color",
    timeout: float | None = None,
) -> dict[str, Any]:
    """The first frame: ``command`` as an argv (a list) or a shell string (a str)."""
    request: dict[str, Any] = (
        {"shell": command} if isinstance(command, str) else {"argv": list(command)}
    )
    if env:
        request["env"] = dict(env)
    if cwd is not None:
        request["cwd"] = cwd
    if user is not None:
        request["user"] = user
    if pty is not None:
        request["pty"] = {"rows": pty[0], "cols": pty[1], "term": term}
    if timeout is not None:
        request["timeout"] = timeout
    return request


async def open_exec(socket_path: Path, vm: str, request: Mapping[str, Any]) -> AsyncExec:
    """Start a command in ``vm`` (request: :func:`exec_request`); returns once it runs."""
    check_private_dir(socket_path.parent)
    uri = f"ws://bangerd/v1/vms/{quote(vm, safe='')}/exec"
    try:
        ws = await unix_connect(
            str(socket_path),
            uri,
            compression=None,
            max_size=MAX_FRAME,
            ping_interval=None,
            user_agent_header=None,
            open_timeout=10,
            close_timeout=5,
        )
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonGone(
            f"bangerd is not running (socket {socket_path}: {exc.strerror})",
            hint="start it: banger system start",
        ) from None
    except InvalidStatus as exc:
        raise BangerError(
            f"bangerd refused the exec connection (HTTP {exc.response.status_code})",
            hint="is bangerd older than this banger? restart it: banger system restart",
        ) from None
    except (OSError, WebSocketException, TimeoutError) as exc:
        raise ExecConnectionLost(f"could not open an exec connection to bangerd: {exc}") from None
    try:
        await ws.send(json.dumps(dict(request)))
        reply = await ws.recv()
        data = json.loads(reply) if isinstance(reply, str) else {}
        if data.get("type") == "error":
            _raise_remote(data)
        if data.get("type") != "started":
            raise ExecConnectionLost(f"bangerd answered the exec request with {reply!r:.80}")
    except ConnectionClosed:
        await ws.close()
        raise ExecConnectionLost("bangerd closed the exec connection at the start") from None
    except BaseException:
        await ws.close()
        raise
    return AsyncExec(ws, str(data.get("exec_id")))


async def run_exec(
    socket_path: Path, vm: str, request: Mapping[str, Any], stdin: bytes | None = None
) -> ExecResult:
    """Run a command to its end and collect its output (stdin: sent, then closed)."""
    handle = await open_exec(socket_path, vm, request)
    async with handle:
        if stdin:
            writer: asyncio.Task[None] | None = asyncio.create_task(_feed(handle, stdin))
        else:
            writer = None
            await handle.close_stdin()
        try:
            return await handle.wait()
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)


async def _feed(handle: AsyncExec, data: bytes) -> None:
    await handle.write(data)
    await handle.close_stdin()
