"""QEMU snapshots: the guest's device and memory state saved with QMP ``migrate`` to a file.

Save (the VM paused: QMP ``stop``): open the state file, hand its descriptor
to QEMU over the QMP socket (``getfd``, SCM_RIGHTS — never ``exec:``, which is
a shell command line), ``migrate uri=fd:<name>``, and wait for the
``MIGRATION`` event that says ``completed`` (or ``failed``). When migration
completes QEMU flushes and inactivates the disks, so the caller copies them
then; QMP ``cont`` re-activates them and resumes the guest.

Restore: a new QEMU with the same machine (same argv but for its own disk
copies, tap and sockets) started with ``-incoming defer -S``, the state file's
descriptor passed the same way, ``migrate-incoming uri=fd:<name>``, the
``MIGRATION`` event, then ``cont``. ``-S`` keeps the guest stopped after the
load until banger says ``cont``, so a failed restore never runs it.

The command builders are pure and tested without QEMU; the functions below
them drive one QMP connection.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from banger.errors import InvalidArgument
from banger.vmm.base import VMMError
from banger.vmm.qmp import QMPClient, QMPError

#: The name QEMU files the passed descriptor under (per monitor connection).
STATE_FD_NAME = "banger-state"
#: Bytes per second: QEMU 7.2 throttles migration to 32 MiB/s by default, which
#: would turn saving a paused guest into a long wait for nothing.
MAX_BANDWIDTH = 64 * 1024 * 1024 * 1024
#: Seconds a save or load may take (it is local file I/O: generous).
MIGRATION_TIMEOUT = 300.0
#: ``-S``: do not run the guest when the load completes; banger sends ``cont``.
INCOMING_ARGS = ("-incoming", "defer", "-S")
#: The ``-netdev`` id banger's QEMU command line gives the guest's NIC (vmm/qemu.py).
NETDEV = "n0"
_FD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_DONE = ("completed", "failed", "cancelled")

Command = tuple[str, dict[str, Any]]


class SnapshotError(VMMError):
    """Saving or loading a QEMU snapshot failed."""


def _fd_name(name: str) -> str:
    # QEMU refuses names starting with a digit (they would read as fd numbers).
    if not _FD_NAME.fullmatch(name):
        raise InvalidArgument(f"fdname: not a QMP descriptor name: {name!r}")
    return name


def events_on() -> Command:
    """Ask for ``MIGRATION`` status events, so completion is awaited, not polled."""
    return (
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "events", "state": True}]},
    )


def full_speed() -> Command:
    return ("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})


def getfd(name: str = STATE_FD_NAME) -> Command:
    return ("getfd", {"fdname": _fd_name(name)})


def migrate_to_fd(name: str = STATE_FD_NAME) -> Command:
    return ("migrate", {"uri": f"fd:{_fd_name(name)}"})


def migrate_from_fd(name: str = STATE_FD_NAME) -> Command:
    return ("migrate-incoming", {"uri": f"fd:{_fd_name(name)}"})


def set_link(up: bool, netdev: str = NETDEV) -> Command:
    """The guest's NIC link up or down (a down link: the guest sends into nothing).

    Named by the netdev, QEMU sets the NIC peer's link too, which the guest
    sees as its carrier. After a load only: the incoming device state resets it.
    """
    return ("set_link", {"name": netdev, "up": up})


def incoming_argv(argv: list[str]) -> list[str]:
    """A launch command line turned into one that waits for an incoming state."""
    if "-incoming" in argv:
        raise InvalidArgument("argv: already has -incoming")
    return [*argv, *INCOMING_ARGS]


async def _run(qmp: QMPClient, command: Command, fds: tuple[int, ...] = ()) -> Any:
    name, arguments = command
    return await qmp.execute(name, arguments, fds=fds)


async def _migrate(qmp: QMPClient, state_fd: int, start: Command, what: str) -> None:
    """Pass ``state_fd``, start the migration and wait for its outcome."""
    await _run(qmp, events_on())
    await _run(qmp, full_speed())
    await _run(qmp, getfd(), (state_fd,))
    await _run(qmp, start)
    while True:
        event = await qmp.wait_event("MIGRATION", timeout=MIGRATION_TIMEOUT)
        if event is None:
            if what == "save":
                await qmp.execute("migrate_cancel")
            raise SnapshotError(f"QEMU: the {what} did not finish within {MIGRATION_TIMEOUT:g}s")
        status = str(event.get("data", {}).get("status", ""))
        if status in _DONE:
            break
    if status != "completed":
        info = await qmp.execute("query-migrate")
        detail = info.get("error-desc", status) if isinstance(info, dict) else status
        raise SnapshotError(f"QEMU: the {what} {status}: {detail}")


async def save_state(qmp: QMPClient, state_file: Path) -> bool:
    """Pause the guest and write its state to ``state_file`` (created, must not exist).

    Returns whether the guest was running before (the caller resumes it with
    ``cont`` after copying the disks, or leaves it paused).
    """
    status = await qmp.execute("query-status")
    was_running = isinstance(status, dict) and status.get("status") == "running"
    if was_running:
        await qmp.execute("stop")
    fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        await _migrate(qmp, fd, migrate_to_fd(), "save")
        os.fsync(fd)
    except BaseException as exc:
        if was_running:  # the guest was fine before we asked: leave it running
            with contextlib.suppress(QMPError):
                await qmp.execute("cont")
        if isinstance(exc, QMPError):
            raise SnapshotError(f"QEMU: saving the guest state failed: {exc.message}") from None
        raise
    finally:
        os.close(fd)  # QEMU has its own copy (and closes it when the migration ends)
    return was_running


async def load_state(qmp: QMPClient, state_file: Path) -> None:
    """Load ``state_file`` into a QEMU started with :data:`INCOMING_ARGS`; leaves it paused."""
    fd = os.open(state_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await _migrate(qmp, fd, migrate_from_fd(), "load")
    except QMPError as exc:
        raise SnapshotError(f"QEMU: loading the guest state failed: {exc.message}") from None
    finally:
        os.close(fd)
