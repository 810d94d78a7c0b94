"""A client for the QEMU guest agent (``qemu-ga``): a control channel that needs no network.

The agent speaks QMP's wire format without a greeting or capabilities: one JSON
object per request, ``{"return": ...}`` or ``{"error": {"class", "desc"}}`` per
answer, one request at a time. The byte stream is not reliable across
reconnects: a reply the previous client never read, or half a request written
before a snapshot, may still sit in the channel. So every connection (and every
command that timed out) is followed by a resynchronisation before the next
command: the client sends a 0xFF byte (the agent's parser treats the invalid
UTF-8 as a flush), then ``guest-sync-delimited`` with a random id, and discards
everything up to the 0xFF sentinel the agent puts before that reply, until the
reply carrying the same id arrives.

Transports: a Unix socket that is the host end of a virtio-serial port (QEMU's
chardev) or ``qemu-ga -m unix-listen``, and Firecracker's hybrid vsock (a Unix
socket on the host, then ``CONNECT <port>\\n`` answered by ``OK <hostport>\\n``;
the answer is read with a bound, so a garbled or hostile one is one error, never a
hang). Which one a VM has is its VMM driver's to say (:class:`AgentEndpoint`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from banger.errors import BangerError

log = logging.getLogger(__name__)

#: The longest wait between two ``guest-exec-status`` queries of :meth:`GuestAgent.run`.
MAX_POLL = 0.2

#: The virtio-serial port name the guest's ``qemu-ga`` looks for.
PORT_NAME = "org.qemu.guest_agent.0"
#: The vsock port banger's guests run the agent on (Firecracker): the guest's
#: ``qemu-ga -m vsock-listen -p 4294967295:1024`` (any CID), started by image
#: finalize's ``/sbin/banger-agent-vsock`` when the VM has a vsock device and no
#: virtio-serial agent port. Part of the guest contract: change both together.
VSOCK_PORT = 1024
#: Firecracker's whole answer to ``CONNECT``: ``OK `` and a u32 host port, a newline.
HANDSHAKE_LIMIT = len(b"OK 4294967295\n")
_U32_MAX = 2**32 - 1
_OK = re.compile(rb"OK ([0-9]{1,10})\n")
#: Replies are small except ``guest-exec-status`` output; bounded all the same.
_LINE_LIMIT = 16 * 1024 * 1024
_SENTINEL = b"\xff"

FreezeStatus = Literal["thawed", "frozen"]
ShutdownMode = Literal["powerdown", "halt", "reboot"]


class AgentError(BangerError):
    """The guest agent could not be reached, did not answer in time, or failed a command."""

    http_status = 502


class AgentUnavailable(AgentError):
    """No agent answers on the channel (not installed, not started yet, or the channel is down)."""


class AgentCommandError(AgentError):
    """The agent answered a command with an error (``error_class`` is the agent's class)."""

    def __init__(self, message: str, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class


class GuestAgent:
    """One connection to a guest agent. Use :meth:`connect` or :meth:`connect_vsock`.

    Commands are serialised: the protocol has no request ids a reader could route by.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._where = where
        self._lock = asyncio.Lock()
        self._needs_sync = True

    # -- connecting -------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: Path, timeout: float = 5.0) -> GuestAgent:
        """Connect to the agent's Unix socket and resynchronise, all within ``timeout``."""
        where = f"guest agent socket {path}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
                agent = cls(reader, writer, where)
                await agent._sync_or_close()
        except TimeoutError:
            raise AgentUnavailable(f"{where}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise AgentUnavailable(f"cannot connect to {where}: {exc.strerror or exc}") from None
        return agent

    @classmethod
    async def connect_vsock(
        cls, uds_path: Path, port: int = VSOCK_PORT, timeout: float = 5.0
    ) -> GuestAgent:
        """Connect through Firecracker's hybrid vsock socket to the guest's ``port``.

        Firecracker answers ``CONNECT <port>`` with ``OK <host port>`` once the guest
        accepted, and closes the connection when nothing listens on the port. The
        answer is read a byte at a time up to :data:`HANDSHAKE_LIMIT` bytes (what
        follows it is the agent's stream, not to be swallowed): anything else is one
        :class:`AgentUnavailable` naming what came back, never a hang past ``timeout``.
        """
        if not 0 <= port <= _U32_MAX:
            raise ValueError(f"port: not a vsock port: {port}")
        where = f"guest agent on vsock port {port} via {uds_path}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(
                    str(uds_path), limit=_LINE_LIMIT
                )
                agent = cls(reader, writer, where)
                try:
                    writer.write(f"CONNECT {port}\n".encode())
                    await writer.drain()
                    parse_connect_reply(await read_connect_reply(reader), where)
                except BaseException:
                    await agent.close()
                    raise
                await agent._sync_or_close()
        except TimeoutError:
            raise AgentUnavailable(f"{where}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise AgentUnavailable(f"cannot connect to {where}: {exc.strerror or exc}") from None
        return agent

    async def _sync_or_close(self) -> None:
        try:
            async with self._lock:
                await self._sync()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> GuestAgent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the wire ---------------------------------------------------------------------

    async def _send(self, command: str, arguments: dict[str, Any] | None) -> None:
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()

    async def _read_message(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise AgentUnavailable(f"{self._where}: connection closed")
        # A stray sentinel (a second sync answered late) is not part of the JSON.
        line = line.lstrip(_SENTINEL).strip()
        if not line:
            return {}
        try:
            message = json.loads(line)
        except ValueError:
            raise AgentError(f"{self._where}: not JSON: {line[:120]!r}") from None
        if not isinstance(message, dict):
            raise AgentError(f"{self._where}: not a JSON object: {line[:120]!r}")
        return cast(dict[str, Any], message)

    async def _sync(self) -> None:
        """Flush the agent's parser and discard stale replies until our id comes back."""
        sync_id = secrets.randbelow(2**31 - 1) + 1
        self._writer.write(_SENTINEL)
        await self._send("guest-sync-delimited", {"id": sync_id})
        while True:
            # Everything before the sentinel is stale: a reply for an earlier client,
            # or the agent's complaint about the half request the 0xFF cut off.
            try:
                await self._reader.readuntil(_SENTINEL)
            except asyncio.IncompleteReadError:
                raise AgentUnavailable(f"{self._where}: connection closed") from None
            except asyncio.LimitOverrunError:
                raise AgentError(f"{self._where}: no sync sentinel in 16 MiB") from None
            message = await self._read_message()
            if message.get("return") == sync_id:
                self._needs_sync = False
                return
            log.debug("%s: discarding %s while resynchronising", self._where, message)

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run ``command``; its ``return`` value, or :class:`AgentError`.

        A timeout leaves the channel in an unknown state: the next command
        resynchronises first.
        """
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    if self._needs_sync:
                        await self._sync()
                    await self._send(command, arguments)
                    self._needs_sync = True  # until the answer is read
                    message = await self._read_message()
                    while not message:
                        message = await self._read_message()
                    self._needs_sync = False
            except TimeoutError:
                raise AgentUnavailable(
                    f"{self._where}: {command} not answered within {timeout:g}s"
                ) from None
            except asyncio.IncompleteReadError:
                raise AgentUnavailable(f"{self._where}: connection closed") from None
            except OSError as exc:
                raise AgentUnavailable(f"{self._where}: {command}: {exc.strerror or exc}") from None
        if "error" in message:
            error = message["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            klass = error.get("class") if isinstance(error, dict) else None
            raise AgentCommandError(f"guest agent {command}: {desc}", klass)
        if "return" not in message:
            raise AgentError(f"{self._where}: {command}: unexpected answer {message!r}")
        return message["return"]

    # -- commands ---------------------------------------------------------------------

    async def ping(self, timeout: float = 5.0) -> None:
        """Succeeds when the agent runs and answers (the guest is alive enough for it)."""
        await self.execute("guest-ping", timeout=timeout)

    async def get_time(self, timeout: float = 5.0) -> int:
        """The guest's clock, nanoseconds since the epoch."""
        return int(await self.execute("guest-get-time", timeout=timeout))

    async def set_time(self, ns: int | None, timeout: float = 10.0) -> None:
        """Set the guest's clock to ``ns`` since the epoch (None: from its RTC).

        The agent also writes the RTC (it runs ``hwclock``), which takes up to a
        second under emulation, hence the longer timeout.
        """
        if ns is not None and ns < 0:
            raise ValueError("time: must not be negative")
        await self.execute("guest-set-time", {} if ns is None else {"time": ns}, timeout=timeout)

    async def fsfreeze_status(self, timeout: float = 5.0) -> FreezeStatus:
        status = await self.execute("guest-fsfreeze-status", timeout=timeout)
        if status not in ("thawed", "frozen"):
            raise AgentError(f"{self._where}: guest-fsfreeze-status: unexpected {status!r}")
        return cast(FreezeStatus, status)

    async def fsfreeze_freeze(self, timeout: float = 30.0) -> int:
        """Freeze the guest's filesystems (FIFREEZE); how many were frozen.

        The agent thaws by itself only on ``guest-fsfreeze-thaw``: a caller that
        freezes must thaw on every path.
        """
        return int(await self.execute("guest-fsfreeze-freeze", timeout=timeout))

    async def fsfreeze_thaw(self, timeout: float = 30.0) -> int:
        """Thaw what a freeze froze; how many were thawed (0 when none was frozen)."""
        return int(await self.execute("guest-fsfreeze-thaw", timeout=timeout))

    async def shutdown(
        self, mode: ShutdownMode = "powerdown", timeout: float = 5.0, error_window: float = 0.0
    ) -> None:
        """Ask the guest to power down (or halt, reboot).

        The agent sends no answer when the command succeeds (it runs the guest's
        ``/sbin/shutdown``), only when it fails — for instance in a guest whose
        PID 1 is not systemd, where that program cannot act. So after sending,
        this listens up to ``error_window`` seconds for such an answer
        (:class:`AgentCommandError`); silence, or the channel closing as the
        guest goes down, counts as accepted. The caller watches the VMM exit.
        """
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    if self._needs_sync:
                        await self._sync()
                    await self._send("guest-shutdown", {"mode": mode})
            except TimeoutError:
                raise AgentUnavailable(f"{self._where}: no answer within {timeout:g}s") from None
            except OSError as exc:
                raise AgentUnavailable(f"{self._where}: guest-shutdown: {exc}") from None
            self._needs_sync = True
            message: dict[str, Any] = {}
            try:
                async with asyncio.timeout(error_window):
                    while not message:
                        message = await self._read_message()
            except (TimeoutError, AgentError, OSError, asyncio.IncompleteReadError):
                return
        if "error" in message:
            error = message["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            klass = error.get("class") if isinstance(error, dict) else None
            raise AgentCommandError(f"guest agent guest-shutdown: {desc}", klass)

    async def run(
        self,
        argv: list[str],
        *,
        timeout: float = 60.0,
        poll: float = 0.05,
    ) -> ExecResult:
        """Run ``argv`` in the guest (``guest-exec``, output captured) and wait for it.

        The agent starts the program and answers with its pid; its end is only
        learnt by asking (``guest-exec-status``), so this polls every ``poll``
        seconds, growing by half up to :data:`MAX_POLL` (a status query is one
        small exchange; a coarser poll would add up to its interval to every
        re-identification and pool take). A program still running after
        ``timeout`` raises :class:`AgentUnavailable` (it is left running).
        """
        if not argv:
            raise ValueError("argv: must not be empty")
        started = await self.execute(
            "guest-exec",
            {"path": argv[0], "arg": argv[1:], "capture-output": True},
            timeout=min(timeout, 30.0),
        )
        pid = int(started["pid"])
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.execute("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                return ExecResult(
                    int(status.get("exitcode", -1)),
                    _b64(status.get("out-data")),
                    _b64(status.get("err-data")),
                    status.get("signal"),
                )
            if asyncio.get_running_loop().time() >= deadline:
                raise AgentUnavailable(f"{self._where}: {argv[0]} still running after {timeout:g}s")
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, MAX_POLL)

    async def write_file(self, path: str, data: bytes, mode: str = "w") -> None:
        """Write ``data`` to the guest's ``path`` (``guest-file-open/write/close``)."""
        handle = await self.execute("guest-file-open", {"path": path, "mode": mode})
        try:
            await self.execute(
                "guest-file-write",
                {"handle": handle, "buf-b64": base64.b64encode(data).decode()},
            )
        finally:
            await self.execute("guest-file-close", {"handle": handle})


async def read_connect_reply(reader: asyncio.StreamReader) -> bytes:
    """Firecracker's answer to ``CONNECT``: bytes up to and with the newline, at most
    :data:`HANDSHAKE_LIMIT` of them, fewer at EOF. Read one at a time: the agent's
    stream follows at once, and must stay in the reader."""
    reply = b""
    while len(reply) < HANDSHAKE_LIMIT and not reply.endswith(b"\n"):
        byte = await reader.read(1)
        if not byte:
            break
        reply += byte
    return reply


def parse_connect_reply(reply: bytes, where: str = "vsock") -> int:
    """The host port in Firecracker's ``OK <port>\\n``; :class:`AgentUnavailable` for
    anything else (what :func:`read_connect_reply` returned, so at most
    :data:`HANDSHAKE_LIMIT` bytes), naming what came back."""
    if not reply:
        raise AgentUnavailable(
            f"{where}: vsock connect refused (connection closed: nothing listens on that"
            " port in the guest, or the guest is not up)"
        )
    match = _OK.fullmatch(reply)
    if match is not None and int(match.group(1)) <= _U32_MAX:
        return int(match.group(1))
    if not reply.endswith(b"\n"):
        why = (
            f"no newline in the first {HANDSHAKE_LIMIT} bytes"
            if len(reply) >= HANDSHAKE_LIMIT
            else "connection closed mid-answer"
        )
    else:
        why = "not OK <port>"
    raise AgentUnavailable(f"{where}: vsock connect refused ({why}: {reply!r})")


@dataclass(frozen=True)
class AgentEndpoint:
    """Where the host reaches one guest's agent; the VMM driver says which
    (:meth:`banger.vmm.base.VMMDriver.agent_endpoint`).

    ``path`` is a Unix socket: the host end of QEMU's virtio-serial port when
    ``vsock_port`` is None, else Firecracker's hybrid vsock socket, through which
    the agent is the guest's listener on ``vsock_port``.
    """

    path: Path
    vsock_port: int | None = None

    async def connect(self, timeout: float = 5.0) -> GuestAgent:
        if self.vsock_port is None:
            return await GuestAgent.connect(self.path, timeout=timeout)
        return await GuestAgent.connect_vsock(self.path, self.vsock_port, timeout=timeout)


@dataclass(frozen=True)
class ExecResult:
    """How a ``guest-exec`` program ended (``signal`` when a signal ended it)."""

    exitcode: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None


def _b64(value: object) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) else b""
