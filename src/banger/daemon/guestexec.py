"""One guest command over a held connection, streamed (issue #17 items 2 and 8).

The transport (a WebSocket: :mod:`banger.daemon.api.vms.exec`) is abstracted as
:class:`Peer`; this module owns what happens in the guest:

- a command without a terminal is spawned by the guest's command runner
  (:mod:`banger.daemon.runner`, one long-lived channel of the VM's held
  connection): no sshd session, PAM or login shell per command. A terminal
  (sshd's pty), or a guest without python3, gets its own sshd session on a
  channel of the held connection (:class:`~banger.daemon.guestconn.GuestConns`).
  Either way it is an argv (``exec``'d) or an explicit shell string (``sh -c``),
  with env, cwd and an optional user (``runuser``), built by :meth:`ExecSpec.argv`;
- the runner and sshd both make the command a session leader (``setsid``), so
  it is its own process group. The command and everything it starts carry
  ``BANGER_EXEC_ID=<id>`` in their environment; killing "the exec" signals
  every process group led by a process carrying it (found through
  ``/proc/*/environ``, by the runner or on a second channel), so a timeout, a
  cancel or a client that vanished leaves no process behind — even one that
  left the group;
- output is read only while the client has credit (:data:`WINDOW`
  unacknowledged bytes): a slow reader stops the reads, the runner's per-exec
  window (or the SSH window) fills, and the guest's writes block. The daemon
  never buffers more than a window per exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import asyncssh

from banger.daemon.guestconn import GuestConns
from banger.daemon.runner import RUNNER_LOST_HINT, RunnerExec, RunnerLost
from banger.errors import InvalidArgument
from banger.guest import runner_guest as runner_proto
from banger.guest.ssh import SSHError, remote_command, run_on
from banger.images.oci.guestenv import GuestEnv, switch_user_argv
from banger.store import VMRecord

log = logging.getLogger(__name__)

#: Output bytes the daemon sends ahead of the client's acknowledgements.
WINDOW = 1024 * 1024
#: Stdin bytes held for a guest that is not reading before the client is made to wait.
STDIN_BUFFER = 4 * 1024 * 1024
#: Bytes read from the guest per frame.
CHUNK = 64 * 1024
#: Seconds between SIGTERM and SIGKILL when an exec is killed (timeout, cancel).
KILL_GRACE = 3.0
#: Seconds a refused channel open ("open failed": sshd's MaxSessions) is retried.
OPEN_RETRY = 10.0
#: The environment variable that marks an exec's processes in the guest.
MARK = "BANGER_EXEC_ID"
STDOUT, STDERR = 1, 2
_USER = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)
_SIGNALS = ("HUP", "INT", "QUIT", "KILL", "USR1", "USR2", "TERM", "CONT", "STOP", "WINCH")


class Peer(Protocol):
    """The client end: output frames out, control messages in (transport-agnostic)."""

    async def send_output(self, stream: int, data: bytes) -> None: ...

    async def send_control(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ExecSpec:
    """A checked exec request."""

    command: Sequence[str] | str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    pty: tuple[int, int, str] | None = None  # rows, cols, TERM
    timeout: float | None = None
    #: The image's User (name or uid[:gid], checked at pull) when the request named none.
    image_user: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            if not self.command.strip():
                raise InvalidArgument("shell: empty command")
        elif not self.command:
            raise InvalidArgument("argv: empty")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise InvalidArgument(f"user: not a user name: {self.user!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidArgument("timeout: must be > 0 seconds")
        if self.pty is not None:
            check_size(self.pty[0], self.pty[1])

    def argv(self) -> list[str]:
        """What runs: the argv, or ``sh -c`` for a shell string, under the user switch."""
        command = ["sh", "-c", self.command] if isinstance(self.command, str) else self.command
        if self.user not in (None, "root"):
            assert self.user is not None
            return ["runuser", "-u", self.user, "--", *command]
        if self.user is None and self.image_user:
            return [*switch_user_argv(self.image_user), *command]
        return list(command)

    def script(self, exec_id: str) -> str:
        """The shell text the guest's sshd runs: the mark, then :func:`remote_command`."""
        # Always exec'd: /proc/PID/environ is what a process was exec'd with, so the
        # mark must be exported before the exec to make the command itself findable.
        return f"export {MARK}={exec_id}\n" + remote_command(self.argv(), self.env, self.cwd)


def with_image_defaults(spec: ExecSpec, image: GuestEnv | None) -> ExecSpec:
    """``spec`` with the image's WorkingDir and User where the request gave no cwd or
    user, as ``docker exec`` does; an explicit cwd or user (``root`` too) wins."""
    if image is None:
        return spec
    return replace(
        spec,
        cwd=spec.cwd if spec.cwd is not None else image.working_dir or None,
        image_user=image.user or None if spec.user is None else None,
    )


def check_size(rows: int, cols: int) -> None:
    if not (1 <= rows <= 10000 and 1 <= cols <= 10000):
        raise InvalidArgument(f"pty: rows and cols must be 1..10000 (got {rows}x{cols})")


def kill_script(exec_id: str, signal: str) -> str:
    """Signal every process (and process group) carrying the exec's mark."""
    return (
        f"for f in $(grep -lzx {MARK}={exec_id} /proc/[0-9]*/environ 2>/dev/null); do "
        "p=${f#/proc/}; p=${p%/environ}; "
        f"kill -s {signal} -- -$p 2>/dev/null; kill -s {signal} $p 2>/dev/null; "
        "done; true"
    )


class Credit:
    """Output flow control: at most ``window`` bytes sent and not yet acknowledged."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.outstanding = 0
        self._cond = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.outstanding < self.window)
            self.outstanding += n

    async def ack(self, n: int) -> None:
        async with self._cond:
            self.outstanding = max(0, self.outstanding - n)
            self._cond.notify_all()


@dataclass
class Outcome:
    exit_code: int | None
    signal: str | None
    timed_out: bool = False
    killed: bool = False

    def message(self) -> dict[str, Any]:
        return {
            "type": "exit",
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
        }


class _Process(Protocol):
    """A running command, whichever way it runs (the guest's runner, an sshd session)."""

    async def read(self, stream: int) -> bytes: ...  # b"" at its end

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    async def drain(self, below: int) -> None: ...

    def write_eof(self) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def send_signal(self, name: str) -> bool: ...  # False: the caller kills by mark

    async def wait(self) -> None: ...

    def outcome(self) -> tuple[int | None, str | None] | None: ...  # None: connection lost

    def why_lost(self) -> str | None: ...  # when lost: the words for it, if not the connection's

    def close(self) -> None: ...


class _SSHProcess:
    """A command on its own sshd session (terminals; guests without python3)."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process

    async def read(self, stream: int) -> bytes:
        reader = self.process.stdout if stream == STDOUT else self.process.stderr
        try:
            return await reader.read(CHUNK)
        except (OSError, asyncssh.Error):
            return b""

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)

    def buffered(self) -> int:
        return int(self.process.stdin.channel.get_write_buffer_size())

    async def drain(self, below: int) -> None:
        await self.process.stdin.drain()

    def write_eof(self) -> None:
        self.process.stdin.write_eof()

    def resize(self, rows: int, cols: int) -> None:
        self.process.change_terminal_size(cols, rows)

    def send_signal(self, name: str) -> bool:
        return False

    async def wait(self) -> None:
        await self.process.wait_closed()

    def outcome(self) -> tuple[int | None, str | None] | None:
        status = self.process.exit_status
        sig = self.process.exit_signal[0] if self.process.exit_signal else None
        if status is None and sig is None:
            return None
        return (status if sig is None else None, sig)

    def why_lost(self) -> str | None:
        return None

    def close(self) -> None:
        self.process.close()


class _RunnerProcess:
    """A command the guest's runner spawned (:mod:`banger.daemon.runner`)."""

    def __init__(self, rx: RunnerExec) -> None:
        self.rx = rx

    async def read(self, stream: int) -> bytes:
        return await self.rx.read(runner_proto.STDOUT if stream == STDOUT else runner_proto.STDERR)

    def write(self, data: bytes) -> None:
        self.rx.write(data)

    def buffered(self) -> int:
        return self.rx.buffered()

    async def drain(self, below: int) -> None:
        await self.rx.drain(below)

    def write_eof(self) -> None:
        self.rx.write_eof()

    def resize(self, rows: int, cols: int) -> None:
        pass  # no terminal: a pty exec runs on an sshd session

    def send_signal(self, name: str) -> bool:
        return self.rx.send_signal(name)

    async def wait(self) -> None:
        await self.rx.wait()

    def outcome(self) -> tuple[int | None, str | None] | None:
        if self.rx.lost:
            return None
        return (self.rx.exit_code, self.rx.signal)

    def why_lost(self) -> str | None:
        return self.rx.runner.why_lost

    def close(self) -> None:
        pass  # ends with its EXIT frame (or the channel); kill() has run if it had to


class GuestExec:
    """One running exec: start it, feed it, kill it, report how it ended."""

    def __init__(self, conns: GuestConns, vm: VMRecord, spec: ExecSpec, peer: Peer) -> None:
        self.conns = conns
        self.vm = vm
        self.spec = spec
        self.peer = peer
        self.id = uuid.uuid4().hex
        self.credit = Credit()
        self.process: _Process | None = None
        self.timed_out = False
        self._killing: asyncio.Task[None] | None = None

    async def run(self, control: Callable[[], Awaitable[dict[str, Any] | bytes | None]]) -> Outcome:
        """Run to the end; ``control`` yields the client's next message (None: it left).

        A non-terminal command runs through the guest's runner when it has one
        (no sshd session per command); a terminal, or a guest without python3,
        gets its own sshd session.
        """
        script = self.spec.script(self.id)  # checks env names as the sshd path would
        if self.spec.pty is None:
            runner = await self.conns.runners.channel(self.vm)
            if runner is not None:
                try:
                    rx = await runner.open(
                        self.spec.argv(), env=self.spec.env, cwd=self.spec.cwd, mark=self.id
                    )
                except RunnerLost:
                    pass  # died between the check and the start: an sshd session instead
                else:
                    return await self._drive(_RunnerProcess(rx), control)
        async with self.conns.channel(self.vm) as conn:
            return await self._drive(_SSHProcess(await self._start(conn, script)), control)

    async def _drive(
        self,
        process: _Process,
        control: Callable[[], Awaitable[dict[str, Any] | bytes | None]],
    ) -> Outcome:
        self.process = process
        await self.peer.send_control({"type": "started", "exec_id": self.id})
        pumps = [asyncio.create_task(self._pump(process, STDOUT))]
        if self.spec.pty is None:
            pumps.append(asyncio.create_task(self._pump(process, STDERR)))
        inbound = asyncio.create_task(self._inbound(process, control))
        timer = (
            asyncio.get_running_loop().call_later(self.spec.timeout, self._on_timeout)
            if self.spec.timeout
            else None
        )
        finish = asyncio.create_task(self._finish(process, pumps))
        try:
            done, _ = await asyncio.wait({finish, inbound}, return_when=asyncio.FIRST_COMPLETED)
            if inbound in done and inbound.exception() is not None:
                raise inbound.exception()  # type: ignore[misc]  # a bad control message
            if finish not in done:
                # The client left (inbound returned after killing): bounded wait for the end.
                async with asyncio.timeout(KILL_GRACE + 30):
                    await finish
        except BaseException:
            # A bad message, or the daemon is stopping: the command must not outlive us.
            await asyncio.shield(self.kill())
            raise
        finally:
            if timer is not None:
                timer.cancel()
            for task in (inbound, finish, *pumps):
                task.cancel()
            await asyncio.gather(inbound, finish, *pumps, return_exceptions=True)
            if self._killing is not None:
                await asyncio.gather(self._killing, return_exceptions=True)
            process.close()
        ended = process.outcome()
        if ended is None:
            # The connection (or the runner) died under the command: kill it over a new one.
            await self.kill()
            if (why := process.why_lost()) is not None:
                raise SSHError(why, hint=RUNNER_LOST_HINT)
            raise SSHError(
                f"the connection to VM {self.vm.name} closed before the command ended",
                hint="the guest's sshd went away (restarted, killed) or the guest stopped; "
                "the next command reconnects",
            )
        return Outcome(ended[0], ended[1], self.timed_out)

    @staticmethod
    async def _finish(process: _Process, pumps: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*pumps)
        await process.wait()

    async def _start(
        self, conn: asyncssh.SSHClientConnection, script: str
    ) -> asyncssh.SSHClientProcess[bytes]:
        kw: dict[str, Any] = {}
        if self.spec.pty is not None:
            rows, cols, term = self.spec.pty
            kw = {"term_type": term, "term_size": (cols, rows), "request_pty": "force"}
        delay = 0.02
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_RETRY
        while True:
            try:
                return await conn.create_process(script, encoding=None, **kw)
            except asyncssh.ChannelOpenError as exc:
                # sshd frees a session a beat after the channel's close (its next loop
                # turn), so a slot released and taken again at once can meet "open
                # failed" (MaxSessions): nothing ran, so trying again is safe.
                if exc.code != asyncssh.OPEN_CONNECT_FAILED or loop.time() + delay > deadline:
                    raise SSHError(
                        f"could not start the command in VM {self.vm.name}: {exc}",
                        hint="the guest's sshd refused a new session (its MaxSessions?)",
                    ) from None
            except (OSError, asyncssh.Error) as exc:
                raise SSHError(f"could not start the command in VM {self.vm.name}: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _pump(self, process: _Process, stream: int) -> None:
        while True:
            data = await process.read(stream)
            if not data:
                return
            await self.credit.take(len(data))
            await self.peer.send_output(stream, data)

    async def _inbound(
        self,
        process: _Process,
        control: Callable[[], Awaitable[dict[str, Any] | bytes | None]],
    ) -> None:
        while True:
            message = await control()
            if message is None:  # the client is gone
                await self.kill()
                return
            if isinstance(message, bytes):
                process.write(message)
                # Drain only past a bound: waiting on every write would stall the
                # acks queued behind it while the command writes before it reads.
                if process.buffered() > STDIN_BUFFER:
                    await process.drain(STDIN_BUFFER)
                continue
            kind = message.get("type")
            if kind == "ack":
                await self.credit.ack(int(message.get("bytes", 0)))
            elif kind == "eof":
                process.write_eof()
            elif kind == "resize":
                rows, cols = int(message["rows"]), int(message["cols"])
                check_size(rows, cols)
                if self.spec.pty is not None:
                    process.resize(rows, cols)
            elif kind == "signal":
                name = str(message.get("signal", "")).upper().removeprefix("SIG")
                if name not in _SIGNALS:
                    raise InvalidArgument(f"signal: not one of {', '.join(_SIGNALS)}: {name!r}")
                await self.signal(name)
            else:
                raise InvalidArgument(f"type: unknown control message {kind!r}")

    def _on_timeout(self) -> None:
        self.timed_out = True
        self._killing = asyncio.create_task(self.kill())

    async def signal(self, name: str) -> None:
        """Deliver SIG``name`` to every process of this exec.

        Through the runner when the command runs there (it signals the group and
        every process carrying the mark); otherwise on a second channel. That
        channel is not taken from the bounded slots: with every slot busy (the
        commands being killed among them) a kill must still get through; sshd's
        MaxSessions leaves room above :data:`~.guestconn.CHANNELS_PER_CONN`.
        """
        if self.process is not None and self.process.send_signal(name):
            return
        with contextlib.suppress(SSHError, OSError, asyncssh.Error, TimeoutError):
            async with asyncio.timeout(15):
                conn = await self.conns.get(self.vm)
                await run_on(conn, kill_script(self.id, name), timeout=10)

    async def kill(self) -> None:
        """TERM, then KILL after :data:`KILL_GRACE` if the command has not ended."""
        await self.signal("TERM")
        process = self.process
        if process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_GRACE):
                    await process.wait()
                    return
        await self.signal("KILL")
