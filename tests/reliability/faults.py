"""Fault-injection support: control bangerd and banger-helper, and list what they left behind.

Works on an e2e :class:`~tests.e2e.harness.Banger` (namespace, owner user,
root helper, auto-started daemon). Everything is read from the real places:
the store (read-only SQLite), ``ip link`` and ``nft`` inside the namespace,
``pgrep`` for the owner's processes, the state directory's files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import Banger, _start_helper, daemon_pid
from tests.e2e.leftovers import Kept, query
from tests.support import VENV_BIN, wait_gone, wait_until

STAGE_DELAY_ENV = "BANGER_TEST_STAGE_DELAY"
DEBUG_LOCKS_ENV = "BANGER_DEBUG_LOCKS"
HELPER_DELAY_ENV = "BANGER_TEST_HELPER_DELAY"
DAEMON_LOG = "bangerd.log"
HELPER_LOG = "helper.log"


# -- processes ------------------------------------------------------------------------
def kill9_daemon(b: Banger) -> int:
    pid = daemon_pid(b)
    assert pid is not None, "bangerd is not running"
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    return pid


def stop_daemon(b: Banger) -> None:
    """SIGTERM and wait: the graceful stop a systemd restart does."""
    pid = daemon_pid(b)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid, 90)


def force_stop_daemon(b: Banger) -> None:
    """SIGTERM twice: running operations are cancelled at once (their undo still runs)."""
    pid = daemon_pid(b)
    assert pid is not None, "bangerd is not running"
    offset = log_offset(b)
    os.kill(pid, signal.SIGTERM)
    # The second signal only forces once the first one is being handled (a drain
    # under way): wait for the daemon to say so, not for a guessed interval.
    wait_for_log(b, offset, "received SIGTERM: draining", 60)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid, 60)


def start_daemon(b: Banger, **extra_env: str) -> None:
    """Auto-start bangerd through the CLI with ``extra_env`` (read once, at its start)."""
    assert daemon_pid(b) is None, "stop bangerd first"
    saved = dict(b.env)
    b.env.update(extra_env)
    try:
        b.banger("vm", "list", "--json", timeout=120)
    finally:
        b.env.clear()
        b.env.update(saved)
    assert daemon_pid(b) is not None


def restart_daemon(b: Banger, **extra_env: str) -> None:
    stop_daemon(b)
    start_daemon(b, **extra_env)


def kill9_helper(b: Banger) -> None:
    assert b.helper_pid is not None
    os.kill(b.helper_pid, signal.SIGKILL)
    wait_gone(b.helper_pid)
    b.helper_pid = None


def restart_helper(b: Banger, **extra_env: str) -> None:
    """Start a new helper (the old one is gone) with ``extra_env`` (read once, at its start)."""
    (b.runtime_dir / "helper.sock").unlink(missing_ok=True)
    _start_helper(b, extra_env)


def stop_helper(b: Banger) -> None:
    """SIGTERM and wait: the helper finishes its requests and removes its socket."""
    assert b.helper_pid is not None
    os.kill(b.helper_pid, signal.SIGTERM)
    wait_gone(b.helper_pid)
    b.helper_pid = None


def log_offset(b: Banger, log: str = DAEMON_LOG) -> int:
    try:
        return (b.state_dir / log).stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_log(
    b: Banger, offset: int, needle: str, timeout: float = 120.0, log: str = DAEMON_LOG
) -> str:
    """Wait until a log in the state dir (bangerd's by default), from ``offset``, has ``needle``."""
    path = b.state_dir / log

    def found() -> str:
        with suppress(FileNotFoundError), open(path, "rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                if needle in line:
                    return line
        return ""

    return wait_until(found, timeout, f"{needle!r} in {path}")


def cli_background(b: Banger, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        b.as_owner([str(VENV_BIN / "banger"), *args]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


# -- the store ----------------------------------------------------------------------------
@dataclass(frozen=True)
class OpRow:
    kind: str
    target: str
    stage: str | None
    state: str
    error: str | None


def ops_on(b: Banger, target: str) -> list[OpRow]:
    rows = query(
        b,
        "SELECT kind, target, stage, state, error FROM operations WHERE target = ? "
        "ORDER BY created_at",
        target,
    )
    return [OpRow(*(None if v is None else str(v) for v in row)) for row in rows]  # type: ignore[arg-type]


def vm_json(b: Banger, name: str) -> dict[str, object]:
    data = json.loads(b.banger("vm", "show", name, "--json").stdout)
    assert isinstance(data, dict)
    return data


def reconcile_report(b: Banger) -> dict[str, list[str]]:
    data = json.loads((b.state_dir / "reconcile.json").read_text())
    assert isinstance(data, dict)
    return data


# -- what is left behind ---------------------------------------------------------------
def kept_vm(b: Banger, name: str) -> Kept:
    shown = vm_json(b, name)
    assert shown["state"] == "running", shown
    return Kept(str(shown["id"]), str(shown["tap"]), int(str(shown["pid"])))


# -- a small filesystem ------------------------------------------------------------------
@contextmanager
def small_filesystem(mountpoint: Path, size_mib: int, uid: int, gid: int) -> Iterator[Path]:
    """A loop-mounted ext4 of ``size_mib`` at ``mountpoint`` (created), owned by ``uid``."""
    fd, image_name = tempfile.mkstemp(prefix="banger-smallfs-", suffix=".ext4", dir="/var/tmp")
    os.close(fd)
    image = Path(image_name)
    try:
        subprocess.run(["truncate", "-s", f"{size_mib}M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
        mountpoint.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
        try:
            os.chown(mountpoint, uid, gid)
            mountpoint.chmod(0o700)
            yield mountpoint
        finally:
            if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    finally:
        image.unlink(missing_ok=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
