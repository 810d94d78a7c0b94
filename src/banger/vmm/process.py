"""Supervising a VMM process: what the QEMU and Firecracker drivers share.

Both drivers start their VMM as a direct child (never daemonized) in its own
session, with chosen descriptors placed at fixed numbers, then race "the
control socket answers" against "the process died", and later wait for it,
reap it, and kill it when asking politely did not work. Liveness is always
pid + start time (:mod:`banger.procinfo`), so a recycled pid is never
mistaken for the VMM.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from banger.errors import stderr_tail
from banger.proc import command_env
from banger.procinfo import is_same_process, process_start_time, reap, send_signal, wait_for_exit
from banger.vmm.base import VMMError, VMMProcess

T = TypeVar("T")

#: Signals that may be ignored in the daemon (Python ignores SIGPIPE and SIGXFSZ) and
#: would stay ignored across exec: the VMM gets them back at their defaults.
RESET_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGQUIT,
)


def _high_dup(fd: int) -> int:
    """A close-on-exec copy numbered >= 10, so no dup2 onto a low target can clobber it."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def spawn_in_session(
    exe: str, argv: Sequence[str], fds: Sequence[tuple[int, int]], what: str
) -> int:
    """Start ``exe`` in a new session with each ``(source, target)`` fd placed at ``target``.

    A new session, so a Ctrl-C aimed at the daemon does not reach the guests.
    Nothing else is inherited: the sources are duplicated above 10 first, and
    the copies closed here once the child has its own. The caller still owns
    the sources. ``what`` names the VMM in the error.
    """
    owned: list[int] = []
    try:
        actions = []
        for source, target in fds:
            high = _high_dup(source)
            owned.append(high)
            actions.append((os.POSIX_SPAWN_DUP2, high, target))
        try:
            return os.posix_spawn(
                exe,
                list(argv),
                command_env(),
                file_actions=actions,
                setsid=True,
                setsigdef=RESET_SIGNALS,
                setsigmask=set(),
            )
        except OSError as exc:
            raise VMMError(f"cannot start {what} ({exe}): {exc.strerror or exc}") from None
    finally:
        for fd in owned:
            os.close(fd)


def start_time_of_child(pid: int, what: str, vm_id: str) -> int:
    """The just-spawned child's start time (reaped and refused if it has none)."""
    start_time = process_start_time(pid)
    if start_time is None:  # an unreaped child always has one; be explicit anyway
        reap(pid)
        raise VMMError(f"{what} for VM {vm_id} vanished right after start")
    return start_time


class EarlyExit(Exception):
    """The VMM exited before it was ready; ``status`` is its reaped wait status."""

    def __init__(self, status: int | None) -> None:
        super().__init__(f"exited early (wait status {status})")
        self.status = status

    @property
    def exit_code(self) -> int | None:
        return os.waitstatus_to_exitcode(self.status) if self.status is not None else None


async def ready_or_exit(
    ready: Awaitable[T],
    pid: int,
    *,
    grace: float,
    discard: Callable[[T], Awaitable[None]] | None = None,
) -> None:
    """Return once ``ready`` succeeds, unless process ``pid`` exits first.

    When ``ready`` fails, the process may be about to exit (the failure is often
    its doing): it gets ``grace`` seconds to, so the caller can report the exit
    and its log rather than a refused connection. Raises :class:`EarlyExit`
    (the process reaped) or ``ready``'s own exception. Whatever ``ready``
    produced is handed to ``discard`` at the end (a probe connection, say).
    """
    ready_task = asyncio.ensure_future(ready)
    exited = asyncio.create_task(wait_for_exit(pid, None))
    try:
        await asyncio.wait({ready_task, exited}, return_when=asyncio.FIRST_COMPLETED)
        if ready_task.done() and ready_task.exception() is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), grace)
        if exited.done():
            raise EarlyExit(reap(pid))
        error = ready_task.exception()
        assert error is not None
        raise error
    finally:
        for task in (ready_task, exited):
            task.cancel()
        await asyncio.gather(ready_task, exited, return_exceptions=True)
        if discard is not None and not ready_task.cancelled() and ready_task.exception() is None:
            await discard(ready_task.result())


def log_tail(path: Path, offset: int) -> str:
    """The last lines the VMM wrote to its log since ``offset``, on one line ("" if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return stderr_tail(f.read()[-8192:].decode("utf-8", "replace"), lines=5)
    except OSError:
        return ""


def is_alive(proc: VMMProcess) -> bool:
    """Whether ``proc`` still runs (same pid and start time); a dead child is reaped."""
    if is_same_process(proc.pid, proc.start_time):
        return True
    reap(proc.pid)
    return False


async def wait_reaped(proc: VMMProcess, timeout: float | None) -> bool:
    """Wait up to ``timeout`` for ``proc`` to exit, reaping it if it did."""
    done = await wait_for_exit(proc.pid, timeout, proc.start_time)
    if done:
        reap(proc.pid)
    return done


async def kill(proc: VMMProcess, timeout: float, what: str) -> None:
    """SIGKILL ``proc`` and wait for it to be gone; a survivor is an error."""
    send_signal(proc.pid, proc.start_time, signal.SIGKILL)
    if not await wait_reaped(proc, timeout):
        raise VMMError(f"{what} for VM {proc.vm_id} (pid {proc.pid}) survived SIGKILL")
