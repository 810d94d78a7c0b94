"""banger's command runner in the guest, from the daemon's side (issue #17 item 8).

An exec over an sshd session pays, in the guest, a channel, a fork, PAM
credentials and root's login shell before the command starts: 93% of an exec
of ``true`` under emulation. Instead, bangerd starts
:mod:`banger.guest.runner_guest` once per VM, with the guest's ``python3``, on
one long-lived channel of the VM's held connection, and every non-terminal
exec is a frame on that channel: the runner spawns the argv itself.

Frames (both directions): ``>IBI`` header (payload length, type, exec number)
then the payload; the types are the constants below, shared with the guest
program. Flow control, end to end:

- output: the runner reads a command's pipes only while that exec has fewer
  than :data:`~banger.guest.runner_guest.WINDOW` bytes sent and not acked; the
  daemon acks a chunk when the exec's reader asks for the next one, i.e. after
  it handed the chunk to its client (past the client's own credit). A slow
  client therefore blocks the guest command's writes; the daemon holds at most
  one window per exec, and the channel reader never waits on an exec, so one
  slow exec never stalls the others;
- stdin: at most :data:`STDIN_WINDOW` bytes are in flight to the runner (it
  acks what the command's pipe took); more waits here, bounded by the caller.

If python3 is missing (or too old) the start fails; that is remembered for the
connection and callers fall back to sshd sessions (:meth:`Runners.channel`
returns None). If the channel dies, the runner kills every process group it
started, and each running exec here ends with :class:`RunnerLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import signal
import struct
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple, Protocol

import asyncssh

from banger.guest import runner_guest as proto
from banger.guest.ssh import ExecResult, SSHError, SSHTarget, SSHTimeout
from banger.store import VMRecord

log = logging.getLogger(__name__)

#: Seconds the runner may take to start (python3's start-up under emulation, loaded).
START_TIMEOUT = 30.0
#: Stdin bytes in flight to the runner per exec.
STDIN_WINDOW = 256 * 1024
#: Execs one runner carries at once; more wait for one to end.
EXECS_PER_RUNNER = 64
#: How the guest starts it: isolated (-I: no user site, no PYTHON* variables), no site (-S).
PYTHON = ("python3", "-I", "-S", "-c")

_SOURCE: str | None = None


def runner_source() -> str:
    """The guest program's text (package data, so it is in the wheel)."""
    global _SOURCE
    if _SOURCE is None:
        _SOURCE = resources.files("banger.guest").joinpath("runner_guest.py").read_text()
    return _SOURCE


def runner_command() -> str:
    """The shell text sshd runs for the runner (exec'd: the runner is the session's process),
    marked by its last argument (:data:`~banger.guest.runner_guest.RUNNER_ARG`)."""
    return "exec " + shlex.join([*PYTHON, runner_source(), proto.RUNNER_ARG])


def frame(kind: int, number: int, payload: bytes = b"") -> bytes:
    return proto.HEADER.pack(len(payload), kind, number) + payload


#: The largest frame a runner sends (an output chunk is at most ``proto.CHUNK``; the
#: rest is small JSON): a longer header is a broken or hostile guest, not a reason
#: for bangerd to read gigabytes into memory.
MAX_FRAME = 1024 * 1024
#: Output bytes of one exec bangerd holds before the reader acknowledges them: the
#: runner stops reading a command at ``proto.WINDOW`` unacknowledged, one chunk
#: past it at most. A runner that sends more ignores the credit and is dropped.
MAX_HELD = proto.WINDOW + proto.CHUNK


class RunnerProtocolError(ValueError):
    """The guest's runner broke the framing or the credit: its channel is dropped."""


#: What to do about a runner that ended under a command (:attr:`RunnerChannel.why_lost`).
RUNNER_LOST_HINT = "bangerd's log has the runner's last words; the next command starts a new one"


class RunnerLost(SSHError):
    """The runner's channel closed under running execs."""


class RunnerUnavailable(SSHError):
    """The guest cannot run the runner (no python3, too old, or it did not start)."""


class QuickResult(NamedTuple):
    """What :meth:`Runners.run_quick` returns: exit code (``-N``: killed by signal N)."""

    exit_code: int
    stdout: bytes
    stderr: bytes


class RunnerExec:
    """One exec on a runner: output chunks in, stdin and signals out."""

    def __init__(self, runner: RunnerChannel, number: int) -> None:
        self.runner = runner
        self.number = number
        self.streams: dict[int, asyncio.Queue[bytes | None]] = {
            proto.STDOUT: asyncio.Queue(),
            proto.STDERR: asyncio.Queue(),
        }
        self._unacked = 0
        #: output received and not yet acknowledged (queued, or read and not acked)
        self.held = 0
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.signal: str | None = None
        self.lost = False
        self.ended = asyncio.Event()
        self.started = asyncio.Event()
        self._stdin: deque[bytes] = deque()
        self._stdin_pending = 0
        self._in_flight = 0
        self._eof = False
        self._stdin_cond = asyncio.Condition()

    # -- output -------------------------------------------------------------------------
    async def read(self, stream: int) -> bytes:
        """The next chunk of ``stream`` (``proto.STDOUT``/``STDERR``); b"" at its end.

        Asking for the next chunk acknowledges the ones returned before: they were
        handed on, so the runner may read that much more of the command's output.
        """
        if self._unacked:
            self.runner.send(proto.ACK, self.number, struct.pack(">I", self._unacked))
            self.held -= self._unacked
            self._unacked = 0
        data = await self.streams[stream].get()
        if data is None:  # the end: keep it for a second reader
            self.streams[stream].put_nowait(None)
            return b""
        self._unacked += len(data)
        return data

    # -- stdin --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue stdin; sent as the runner's window allows (see :meth:`buffered`)."""
        if data and not self._eof:
            self._stdin.append(data)
            self._stdin_pending += len(data)
            self._flush()

    def buffered(self) -> int:
        """Stdin bytes queued here and not yet sent."""
        return self._stdin_pending

    async def drain(self, below: int) -> None:
        """Wait until fewer than ``below`` stdin bytes are queued here (or the exec ended)."""
        async with self._stdin_cond:
            await self._stdin_cond.wait_for(
                lambda: self._stdin_pending < below or self.ended.is_set()
            )

    def write_eof(self) -> None:
        self._eof = True
        self._flush()

    def _flush(self) -> None:
        while self._stdin and self._in_flight < STDIN_WINDOW and not self.ended.is_set():
            chunk = self._stdin.popleft()
            room = min(STDIN_WINDOW - self._in_flight, proto.CHUNK)
            if len(chunk) > room:
                chunk, rest = chunk[:room], chunk[room:]
                self._stdin.appendleft(rest)
            self._stdin_pending -= len(chunk)
            self._in_flight += len(chunk)
            self.runner.send(proto.STDIN, self.number, chunk)
        if self._eof and not self._stdin and not self.ended.is_set():
            self.runner.send(proto.EOF, self.number)
            self._eof = False  # sent once
            self._stdin_pending = 0

    def _stdin_acked(self, n: int) -> None:
        self._in_flight = max(0, self._in_flight - n)
        self._flush()
        self._notify_stdin()

    def _notify_stdin(self) -> None:
        async def notify() -> None:
            async with self._stdin_cond:
                self._stdin_cond.notify_all()

        self.runner.spawn(notify())

    # -- control ------------------------------------------------------------------------
    def send_signal(self, name: str) -> bool:
        """SIG``name`` to the command's group and every process carrying its mark."""
        if self.ended.is_set() or not self.runner.alive:
            return False
        self.runner.send(proto.SIGNAL, self.number, name.encode())
        return True

    async def wait(self) -> None:
        await self.ended.wait()

    def _end(self, exit_code: int | None, sig: str | None, *, lost: bool = False) -> None:
        if self.ended.is_set():
            return
        self.exit_code, self.signal, self.lost = exit_code, sig, lost
        self.ended.set()
        self.started.set()
        for queue in self.streams.values():
            queue.put_nowait(None)
        self._notify_stdin()


@dataclass(eq=False)
class RunnerChannel:
    """One running runner on one SSH channel: frames out, frames in, demuxed by exec."""

    vm_name: str
    conn: asyncssh.SSHClientConnection
    process: asyncssh.SSHClientProcess[bytes]
    execs: dict[int, RunnerExec] = field(default_factory=dict)
    alive: bool = True
    #: Why it ended when the runner itself did (it exited, or bangerd dropped it) while
    #: the connection may still be fine; None: its channel or connection closed.
    why_lost: str | None = None
    _next: int = 1
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(EXECS_PER_RUNNER))

    @classmethod
    async def start(cls, vm_name: str, conn: asyncssh.SSHClientConnection) -> RunnerChannel:
        """Start the runner on a new channel of ``conn``; RunnerUnavailable if it cannot run."""
        try:
            process = await conn.create_process(runner_command(), encoding=None)
        except asyncssh.ChannelOpenError as exc:
            raise SSHError(f"could not open the runner's channel in VM {vm_name}: {exc}") from None
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(f"could not start the runner in VM {vm_name}: {exc}") from None
        runner = cls(vm_name, conn, process)
        began = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                header = await process.stdout.readexactly(proto.HEADER.size)
                length, kind, _ = proto.HEADER.unpack(header)
                payload = await process.stdout.readexactly(length)
            if kind != proto.HELLO or json.loads(payload).get("version") != proto.VERSION:
                raise ValueError(f"unexpected first frame {kind}")
        except (asyncio.IncompleteReadError, ValueError, OSError, asyncssh.Error) as exc:
            process.close()
            why = await _stderr_tail(process)
            raise RunnerUnavailable(
                f"the command runner did not start in VM {vm_name}: {why or exc}"
            ) from None
        except TimeoutError:
            process.close()
            raise RunnerUnavailable(
                f"the command runner did not start in VM {vm_name} within {START_TIMEOUT:g}s"
            ) from None
        runner.spawn(runner._read())
        runner.spawn(runner._log_stderr())
        took = asyncio.get_running_loop().time() - began
        log.info("command runner started in VM %s in %.2fs", vm_name, took)
        return runner

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send(self, kind: int, number: int, payload: bytes = b"") -> None:
        if self.alive:
            try:
                self.process.stdin.write(frame(kind, number, payload))
            except (OSError, asyncssh.Error):
                self._lost()

    async def open(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        mark: str,
    ) -> RunnerExec:
        """Start ``argv`` (no shell) in the guest; the caller reads and waits on the handle."""
        await self.slots.acquire()
        if not self.alive:
            self.slots.release()
            raise RunnerLost(f"the command runner in VM {self.vm_name} is gone")
        number = self._next
        self._next += 1
        rx = RunnerExec(self, number)
        self.execs[number] = rx
        request = {"argv": list(argv), "env": dict(env or {}), "cwd": cwd, "mark": mark}
        self.send(proto.START, number, json.dumps(request).encode())
        return rx

    async def _read(self) -> None:
        stdout = self.process.stdout
        try:
            while True:
                header = await stdout.readexactly(proto.HEADER.size)
                length, kind, number = proto.HEADER.unpack(header)
                if length > MAX_FRAME:
                    raise RunnerProtocolError(f"a {length}-byte frame (at most {MAX_FRAME})")
                payload = await stdout.readexactly(length) if length else b""
                self._dispatch(kind, number, payload)
        except (RunnerProtocolError, KeyError, TypeError, struct.error) as exc:
            # A runner that breaks the protocol is dropped like a lost channel: its
            # execs fail, and the next exec starts a new runner.
            log.warning("dropping the command runner of VM %s: %s", self.vm_name, exc)
            self.why_lost = f"bangerd dropped the command runner in VM {self.vm_name}: {exc}"
        except (asyncio.IncompleteReadError, OSError, asyncssh.Error, ValueError) as exc:
            log.debug("runner channel of VM %s ended: %s", self.vm_name, exc)
            self.alive = False  # no new execs on it while its end is looked at
            self.why_lost = await self._exited()
        finally:
            self._lost()

    async def _exited(self) -> str | None:
        """Whether the runner program itself ended (an exit status or signal came with the
        channel's close) rather than the connection under it: the two need other words."""
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            async with asyncio.timeout(2):
                await self.process.wait_closed()
        if self.process.exit_signal:
            how = "killed by SIG" + self.process.exit_signal[0]
        elif self.process.exit_status is not None and self.process.exit_status >= 0:
            how = f"exit status {self.process.exit_status}"
        else:
            return None
        return f"the command runner in VM {self.vm_name} ended ({how}) before the command did"

    def _dispatch(self, kind: int, number: int, payload: bytes) -> None:
        rx = self.execs.get(number)
        if rx is None:
            return
        if kind in (proto.STDOUT, proto.STDERR):
            rx.held += len(payload)
            if rx.held > MAX_HELD:
                raise RunnerProtocolError(
                    f"exec {number} sent {rx.held} bytes unacknowledged (credit {proto.WINDOW})"
                )
            rx.streams[kind].put_nowait(payload or None)
        elif kind == proto.STDIN_ACK:
            rx._stdin_acked(struct.unpack(">I", payload)[0])
        elif kind == proto.STARTED:
            rx.pid = int(json.loads(payload)["pid"])
            rx.started.set()
        elif kind == proto.EXIT:
            result = json.loads(payload)
            del self.execs[number]
            self.slots.release()
            rx._end(result.get("exit_code"), result.get("signal"))

    def _lost(self) -> None:
        # Idempotent: a second call finds no execs, and closing twice is harmless.
        self.alive = False
        self.process.close()
        for number, rx in list(self.execs.items()):
            del self.execs[number]
            self.slots.release()
            rx._end(None, None, lost=True)

    async def _log_stderr(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            async for line in self.process.stderr:
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    log.warning("command runner in VM %s: %s", self.vm_name, text)

    def close(self) -> None:
        self._lost()


async def _stderr_tail(process: asyncssh.SSHClientProcess[bytes]) -> str:
    with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
        async with asyncio.timeout(2):
            data = await process.stderr.read(4096)
            return data.decode("utf-8", "replace").strip().splitlines()[-1] if data.strip() else ""
    return ""


@dataclass(eq=False)
class _VMRunner:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    runner: RunnerChannel | None = None
    prestart: asyncio.Task[None] | None = None
    #: Connections on which the runner could not start (python3 missing): sshd for them.
    refused: list[asyncssh.SSHClientConnection] = field(default_factory=list)


class _Conns(Protocol):
    """What the runners need of :class:`~banger.daemon.guestconn.GuestConns` (which owns them)."""

    def target(self, vm: VMRecord) -> SSHTarget: ...

    async def get(self, vm: VMRecord) -> asyncssh.SSHClientConnection: ...

    async def run(
        self,
        vm: VMRecord,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult: ...


class Runners:
    """The runner of each VM, on one of its held connections, started on first use."""

    def __init__(self, conns: _Conns) -> None:
        self.conns = conns
        self._vms: dict[str, _VMRunner] = {}

    async def channel(self, vm: VMRecord) -> RunnerChannel | None:
        """``vm``'s live runner, started if needed; None: use sshd sessions for this one.

        While the runner started after the boot is still coming up, None as well: the
        exec gets an sshd session now instead of waiting for python3's start-up in the
        guest (about a second under emulation: `vm run -- CMD` right after the boot
        waited that long, several times an sshd session on the held connection).
        Errors reaching the VM at all (stopped, unreachable) are raised as they are.
        """
        self.conns.target(vm)  # a VM that is not running is a Conflict, runner or not
        state = self._vms.setdefault(vm.id, _VMRunner())
        if state.runner is not None and state.runner.alive:
            return state.runner
        if state.prestart is not None and not state.prestart.done():
            return None
        async with state.lock:
            if state.runner is not None and state.runner.alive:
                return state.runner
            conn = await self.conns.get(vm)
            state.refused = [c for c in state.refused if not c.is_closed()]
            if any(c is conn for c in state.refused):
                return None
            return await self._start(vm.name, state, conn, "this exec uses an sshd session")

    def prestart(self, vm: VMRecord, conn: asyncssh.SSHClientConnection) -> None:
        """Start ``vm``'s runner now, in the background, on the connection that just
        proved the guest answers: the first exec (``vm run -- CMD`` right after the
        boot) then finds it ready instead of paying python3's start-up under emulation."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._vms.setdefault(vm.id, _VMRunner())
        state.prestart = loop.create_task(self._prestart(vm.name, state, conn))

    @classmethod
    async def _prestart(
        cls, vm_name: str, state: _VMRunner, conn: asyncssh.SSHClientConnection
    ) -> None:
        async with state.lock:
            if state.runner is None or not state.runner.alive:
                await cls._start(vm_name, state, conn, "the first exec starts it")

    @staticmethod
    async def _start(
        vm_name: str, state: _VMRunner, conn: asyncssh.SSHClientConnection, otherwise: str
    ) -> RunnerChannel | None:
        """Start the runner on ``conn`` (``state.lock`` held); None when it cannot start.

        A guest that cannot run it (no python3) is remembered for ``conn``: its execs
        use sshd sessions. Any other failure is logged with ``otherwise``, what happens
        instead, and the next use tries again.
        """
        try:
            state.runner = await RunnerChannel.start(vm_name, conn)
        except RunnerUnavailable as exc:
            log.warning("%s; execs in VM %s use sshd sessions", exc.message, vm_name)
            state.refused.append(conn)
            return None
        except SSHError as exc:
            log.info("%s; %s", exc.message, otherwise)
            return None
        return state.runner

    def active(self, vm_id: str) -> RunnerChannel | None:
        state = self._vms.get(vm_id)
        if state is None or state.runner is None or not state.runner.alive:
            return None
        return state.runner

    def forget(self, vm_id: str) -> None:
        """The VM's connections are closing (stop, pause, rm): drop its runner."""
        state = self._vms.pop(vm_id, None)
        if state is not None and state.prestart is not None:
            state.prestart.cancel()
        if state is not None and state.runner is not None:
            state.runner.close()

    def close(self) -> None:
        for vm_id in list(self._vms):
            self.forget(vm_id)

    async def run_quick(
        self,
        vm: VMRecord,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> QuickResult:
        """Run ``argv`` (no shell, no stdin) as root in ``vm``; its status and whole output.

        For daemon-side checks and small commands: through the runner when the guest
        has one, else one sshd session on the held connection. On ``timeout`` the
        command is killed and :class:`~banger.guest.ssh.SSHTimeout` raised.
        """
        runner = await self.channel(vm)
        if runner is None:
            result = await self.conns.run(vm, list(argv), env=env, cwd=cwd, timeout=timeout)
            return QuickResult(result.exit_status, result.stdout, result.stderr)
        mark = uuid.uuid4().hex
        rx = await runner.open(argv, env=env, cwd=cwd, mark=mark)
        rx.write_eof()

        async def collect(stream: int) -> bytes:
            parts = []
            while chunk := await rx.read(stream):
                parts.append(chunk)
            return b"".join(parts)

        try:
            async with asyncio.timeout(timeout):
                out, err = await asyncio.gather(collect(proto.STDOUT), collect(proto.STDERR))
                await rx.wait()
        except TimeoutError:
            rx.send_signal("KILL")
            raise SSHTimeout(
                f"{shlex.join(argv)[:200]} in VM {vm.name} did not finish within {timeout:g}s"
            ) from None
        if rx.lost:
            if rx.runner.why_lost is not None:
                raise RunnerLost(rx.runner.why_lost, hint=RUNNER_LOST_HINT)
            raise RunnerLost(
                f"the connection to VM {vm.name} closed before the command ended",
                hint="the guest's sshd went away (restarted, killed) or the guest stopped",
            )
        code = rx.exit_code
        if code is None:
            code = -_signum(rx.signal)
        return QuickResult(code, out, err)


def _signum(name: str | None) -> int:
    try:
        return int(signal.Signals["SIG" + (name or "KILL")])
    except KeyError:
        return 9
