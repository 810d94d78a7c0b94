"""The host's real ``qemu-ga`` (Debian's qemu-guest-agent) for tests of the agent client.

``qemu-ga -m unix-listen`` serves the protocol a guest's agent serves over
virtio-serial. Commands that would act on the host (its clock, freezing its
filesystems, shutting it down, running programs) are blocked.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import wait_until

QEMU_GA = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
BLOCKED = "guest-set-time,guest-fsfreeze-freeze,guest-fsfreeze-thaw,guest-shutdown,guest-exec"


def start_qemu_ga(sock: Path, state: Path, blocked: str = BLOCKED) -> subprocess.Popen[bytes]:
    """``qemu-ga`` listening on ``sock`` (state files in ``state``, created)."""
    if not Path(QEMU_GA).exists():
        raise RuntimeError(
            "qemu-ga is missing: install qemu-guest-agent (scripts/test-packages.txt)"
        )
    state.mkdir(exist_ok=True)
    return subprocess.Popen(
        [QEMU_GA, "-m", "unix-listen", "-p", str(sock), "-t", str(state), "-b", blocked],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_qemu_ga(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL if it is still there after a hang bound; its pipe closed."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


@contextmanager
def running_qemu_ga(
    sock: Path, state: Path, blocked: str = BLOCKED, *, wait: bool = True
) -> Iterator[Path]:
    """:func:`start_qemu_ga` for the block, stopped after it; ``sock`` once it listens
    (``wait=False``: at once, for a test of a client that waits for it itself)."""
    proc = start_qemu_ga(sock, state, blocked)
    try:
        if wait:
            wait_until(lambda: sock.exists() or proc.poll() is not None, 30, "qemu-ga's socket")
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield sock
    finally:
        stop_qemu_ga(proc)
