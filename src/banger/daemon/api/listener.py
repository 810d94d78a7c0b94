"""Bind the daemon's Unix socket ourselves, owner-only from the first instant.

uvicorn's own ``uds=`` path creates the socket with the process umask and
chmods it afterwards, which leaves a window where another user could connect.
We create it under a 0177 umask (so the inode is born 0600), chmod it again
for certainty, and hand the listening socket to uvicorn.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

from banger.errors import Conflict
from banger.paths import check_socket_path

log = logging.getLogger(__name__)

SOCKET_MODE = 0o600


def bind_unix_socket(path: Path, *, backlog: int = 128) -> socket.socket:
    """A listening socket at ``path`` with mode 0600; a stale file is replaced.

    Call this only while holding the daemon's pid-file lock: then a socket file
    that refuses connections is a leftover from a crash and safe to remove, and
    one that accepts them belongs to a daemon that did not use our pid file
    (say, another version), which we refuse to steal the socket from.
    """
    check_socket_path(path)
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise Conflict(
                f"another process is serving {path}",
                hint="stop the other bangerd first (it may be a different banger version)",
            )
        log.info("removing stale socket %s", path)
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        path.chmod(SOCKET_MODE)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return sock


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise
    finally:
        probe.close()
    return True
