"""One daemon per socket: an exclusively locked pid file in the runtime directory.

The lock (``flock``) is the liveness test, not the pid written inside: the
kernel drops it when the process dies however it dies, so a stale file from a
crash never blocks a restart and a recycled pid is never mistaken for a live
daemon. The pid inside is only for the message telling the user which process
holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from banger.errors import Conflict


class PidFile:
    """Held for the daemon's lifetime; :meth:`release` removes the file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path, *, socket_path: Path | None = None) -> PidFile:
        """Lock ``path`` and write our pid, or raise Conflict naming the live holder."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                where = f" on {socket_path}" if socket_path else ""
                raise Conflict(
                    f"bangerd is already running{where} (pid {holder or 'unknown'})",
                    hint="use the running daemon, or stop it first (SIGTERM) to start another",
                ) from None
            # The previous holder may have unlinked the file between our open and
            # our lock; a lock on an unlinked inode protects nothing, so retry.
            try:
                same = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        """Unlink while still holding the lock, so nobody locks a file about to vanish."""
        if self._fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = -1


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
