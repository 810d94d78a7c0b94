"""Another local user squats the owner's runtime directory before banger uses it.

Without ``XDG_RUNTIME_DIR`` (su sessions, cron, some containers) the runtime
directory falls back to ``/tmp/banger-<uid>``: a name anyone can create first.
Whoever owns that directory can swap the sockets inside it: a fake daemon
would receive the owner's requests and answer ``vm ssh`` with its own host
and key. So the daemon refuses to serve from a directory it does not own (or
that others may write), and the CLI refuses to talk through one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.stranger import PYTHON
from tests.reliability_counts import ReliabilityCounts
from tests.support import User, needs_root, throwaway_user

pytestmark = [pytest.mark.root, needs_root]

VENV_BIN = PYTHON.parent


@pytest.fixture
def owner() -> Iterator[User]:
    with throwaway_user("bgo") as user:
        yield user


@pytest.fixture
def stranger() -> Iterator[User]:
    with throwaway_user("bgx") as user:
        yield user


@pytest.fixture
def fallback_dir(owner: User) -> Iterator[Path]:
    path = Path(f"/tmp/banger-{owner.uid}")
    assert not path.exists() and not path.is_symlink(), f"{path} exists before the test"
    try:
        yield path
    finally:
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def as_user(
    user: User, *argv: str, timeout: float = 20, **env: str
) -> subprocess.CompletedProcess[str]:
    """``argv`` as ``user``; a daemon that wrongly starts serving is killed at ``timeout``."""
    clean = {"HOME": str(user.home), "PATH": f"{VENV_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    clean.update(env)
    return subprocess.run(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
         "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv],
        capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def squat(stranger: User, path: Path, mode: int = 0o777) -> None:
    path.mkdir(mode=mode)
    path.chmod(mode)
    os.chown(path, stranger.uid, stranger.gid)


def test_daemon_refuses_a_runtime_dir_owned_by_someone_else(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    squat(stranger, fallback_dir)
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert str(fallback_dir) in result.stderr
    assert f"owned by uid {stranger.uid}" in result.stderr, result.stderr
    assert not (fallback_dir / "bangerd.sock").exists()


def test_daemon_refuses_a_runtime_dir_others_can_write(
    owner: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    squat(owner, fallback_dir, 0o777)  # the owner's own, but world-writable
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "writable by other users" in result.stderr, result.stderr


def test_daemon_refuses_a_symlinked_runtime_dir(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    target = stranger.home / "trap"
    target.mkdir()
    os.chown(target, owner.uid, owner.gid)  # even a target the owner owns: the link is theirs
    fallback_dir.symlink_to(target)
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "symbolic link" in result.stderr, result.stderr
    assert list(target.iterdir()) == []


def test_cli_will_not_talk_to_a_squatters_socket(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    """The squatter runs a fake daemon first: the owner's CLI must not even connect."""
    squat(stranger, fallback_dir, 0o755)
    sock_path = fallback_dir / "bangerd.sock"
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connected = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = fake.accept()
            connected.set()
            conn.close()

    try:
        fake.bind(str(sock_path))
        os.chown(sock_path, stranger.uid, stranger.gid)
        sock_path.chmod(0o666)
        fake.listen(8)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        result = as_user(owner, str(VENV_BIN / "banger"), "vm", "list", BANGER_NO_AUTOSTART="1")
        reliability_counts.hostile()
    finally:
        with contextlib.suppress(OSError):
            fake.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        fake.close()
    assert not connected.is_set(), "the CLI connected to a socket in a squatted directory"
    assert result.returncode != 0
    assert f"owned by uid {stranger.uid}" in result.stderr, result.stderr
