"""Process liveness that survives pid reuse: a pid plus its start time.

A VMM's pid is stored with the process's start time (field 22 of
``/proc/<pid>/stat``, in clock ticks since boot). After a daemon restart the
pair is checked again: a recycled pid has a different start time, so it is
never mistaken for the VM. Signals go through a pidfd opened *after* the check,
so the process cannot be swapped between the check and the kill.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def parse_stat(text: str) -> tuple[str, int] | None:
    """``(state, start_time)`` from the text of ``/proc/<pid>/stat``.

    The second field, ``comm``, is in parentheses and may itself contain spaces
    and parentheses (``(a) b)``), so split at the *last* closing parenthesis.
    """
    _, sep, rest = text.rpartition(")")
    if not sep:
        return None
    fields = rest.split()
    # rest starts at field 3 (state); start time is field 22.
    if len(fields) < 20:
        return None
    try:
        return fields[0], int(fields[19])
    except ValueError:
        return None


def _read_stat(pid: int) -> tuple[str, int] | None:
    if pid <= 0:
        return None
    try:
        text = (PROC / str(pid) / "stat").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_stat(text)


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    stat = _read_stat(pid)
    return stat[1] if stat else None


def is_same_process(pid: int, start_time: int) -> bool:
    """True if ``pid`` is still the process that started at ``start_time`` and has not exited.

    A zombie (exited, not yet reaped) counts as gone: the VM is dead.
    """
    stat = _read_stat(pid)
    return stat is not None and stat[1] == start_time and stat[0] not in ("Z", "X")


def open_pidfd(pid: int, start_time: int | None = None) -> int | None:
    """A pidfd for ``pid`` if it is (still) the expected process, else None.

    The start time is checked after opening: from then on the pidfd refers to
    that exact process even if the pid is later reused.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if start_time is not None and not is_same_process(pid, start_time):
        os.close(fd)
        return None
    return fd


def send_signal(pid: int, start_time: int, sig: int = signal.SIGKILL) -> bool:
    """Signal the process only if it is the one we started; False if it is gone."""
    fd = open_pidfd(pid, start_time)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


def reap(pid: int) -> int | None:
    """Collect our own exited child (so it leaves no zombie); its wait status or None.

    Harmless for a process that is not our child (for example after a daemon
    restart, when init is its parent) or that is still running.
    """
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if done == pid else None


async def wait_for_exit(pid: int, timeout: float | None, start_time: int | None = None) -> bool:
    """Wait until ``pid`` exits; True if it did (or was already gone), False on timeout.

    Uses a pidfd, which becomes readable when the process exits, so nothing
    polls. Kernels without pidfd_open (< 5.3) fall back to a backoff loop.
    """
    try:
        fd = open_pidfd(pid, start_time)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        return await _poll_for_exit(pid, timeout, start_time)
    if fd is None:
        return True
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(exited, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return True


async def _poll_for_exit(pid: int, timeout: float | None, start_time: int | None) -> bool:
    start = start_time if start_time is not None else process_start_time(pid)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while start is not None and is_same_process(pid, start):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True
