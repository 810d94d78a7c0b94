"""The host's real ``qemu-ga`` (Debian's qemu-guest-agent) for tests of the agent client.

``qemu-ga -m unix-listen`` serves the protocol a guest's agent serves over
virtio-serial. Commands that would act on the host (its clock, freezing its
filesystems, shutting it down, running programs) are blocked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
