"""A real pseudo-terminal with a process on its slave side, shared by the session tests.

What a user's terminal emulator does, and nothing more: a window size, typed
bytes, the screen bytes read back, SIGWINCH on a resize.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """The master side of a real pseudo-terminal with a process on the slave side."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int, cols: int) -> None:
        self.master, slave = os.openpty()
        _winsize(slave, rows, cols)
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.seen = b""

    def expect(self, needle: bytes, timeout: float = 60, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.seen[since:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{needle!r} never appeared; screen bytes: {self.seen[-600:]!r}"
                )
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    time.sleep(0.05)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def answers(self, typed: bytes, needle: bytes, within: float = 2.0) -> bool:
        """Type ``typed``; True once ``needle`` shows in what appears after it.

        ``within`` is one try's patience, not a bound on the test: callers
        retry through :func:`wait_until`.
        """
        mark = len(self.seen)
        self.type(typed)
        with contextlib.suppress(AssertionError):
            self.expect(needle, timeout=within, since=mark)
            return True
        return False

    def resize(self, rows: int, cols: int) -> None:
        _winsize(self.master, rows, cols)
        self.proc.send_signal(signal.SIGWINCH)  # as a terminal emulator does

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
