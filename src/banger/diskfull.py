"""A full filesystem, said once: :class:`DiskFull`, and how to recognise one.

A write that finds no space surfaces in many shapes: an ``OSError`` from
Python, a tool's stderr (``cp``, ``mke2fs``, apt), QEMU's migration error
(``Unable to write to file: No space left on device`` in ``query-migrate``).
Callers (image builds, ``vm snapshot`` / ``vm fork``) turn every one of them
into a single :class:`DiskFull` line naming the filesystem and the step, with
a hint — never a traceback or a tool's raw complaint.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from banger.errors import BangerError, CommandError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: How tools and QEMU say ENOSPC/EDQUOT (C locale: banger.proc sets it).
_FULL_WORDS = ("no space left on device", "disk quota exceeded")


class DiskFull(BangerError):
    """A write ran out of space: one line naming the filesystem and the step."""

    http_status = 507  # Insufficient Storage


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (or its nearest existing parent).

    For messages. ``path`` may reach the helper's stage through
    ``/proc/<pid>/fd/<n>``: realpath turns that into the name the user knows.
    """
    path = Path(os.path.realpath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    dev = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still allocate on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full_is_said(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that found no space (or quota) left.

    An ``OSError`` by its errno; a failed command by its stderr; any other
    banger error (QEMU's migration error through QMP) by its message.
    """
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, CommandError):
        text = f"{exc.stderr}\n{exc.message}".lower()
    elif isinstance(exc, BangerError) and not isinstance(exc, DiskFull):
        text = exc.message.lower()
    else:
        return False
    return any(word in text for word in _FULL_WORDS)
