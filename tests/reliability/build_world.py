"""A throwaway owner running real ``banger image build``s, for the image build fault tests.

The production path, as in :mod:`tests.image_cache`: the owner's CLI
auto-starts ``bangerd``, whose ImageService asks a real root ``banger-helper``
for ``image_build`` (mmdebstrap through the host's apt mirror, then
``mkfs.ext4 -d``). Helper and daemon run in the host network namespace: a
build needs the package mirror and creates no bridge, tap or NAT rule.

Shared by ``test_image_build_disk_full.py`` and ``test_image_build_helper_killed.py``:
the owner's home, the helper's start and stop, and what the tests read back
(the CLI's error lines, the operations table, root-owned files, mounts).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger.errors import HelperError
from banger.helper.client import HelperClient
from banger.mountinfo import mounts_below
from banger.paths import Paths
from tests.image_cache import _as_owner, _start_helper
from tests.support import User, alive, short_tmpdir, stop_pid, throwaway_user, wait_gone

BUILD_TIMEOUT = 1200
#: Files the test's own helper writes as root (not the build's doing).
HELPER_FILES = ("state/helper.log", "run/helper.sock")


@dataclass
class World:
    """A throwaway owner with BANGER_HOME ``home`` and a root helper serving them."""

    user: User
    home: Path
    paths: Paths
    helper_pid: int

    def banger(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_owner(self.user, self.home, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def banger_in_background(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            _as_owner(self.user, self.home, *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ok(self, *args: str) -> str:
        result = self.banger(*args)
        assert result.returncode == 0, f"banger {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start_helper(self) -> None:
        self.helper_pid = _start_helper(self.paths, self.user)


@contextmanager
def owner_home(prefix: str) -> Iterator[tuple[User, Path, Paths]]:
    """A throwaway user and their BANGER_HOME (config and run dirs made; state/ is not)."""
    with throwaway_user(prefix) as user, short_tmpdir(f"{prefix}-") as home:
        paths = Paths.from_env({"BANGER_HOME": str(home)})
        os.chown(home, user.uid, user.gid)
        for d in (paths.runtime_dir, paths.config_dir):
            d.mkdir(mode=0o700)
            os.chown(d, user.uid, user.gid)
        mirror = os.environ.get("BANGER_TEST_DEBIAN_MIRROR")
        if mirror:
            paths.config_file.write_text(f'[images]\ndebian_mirror = "{mirror}"\n')
            os.chown(paths.config_file, user.uid, user.gid)
        try:
            yield user, home, paths
        finally:
            detach_mounts_under(home)


def detach_mounts_under(home: Path) -> None:
    """Lazily unmount what a failed test left mounted under ``home``, deepest first.

    Before ``short_tmpdir`` deletes ``home`` recursively: a build that leaks
    its mounts (the bug these tests catch) leaves binds of host directories in
    its tree (the host's /dev/shm, /sys), and a recursive delete would walk
    into them.
    """
    for point in sorted(mounts_below(home), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


@contextmanager
def serving(user: User, home: Path, paths: Paths) -> Iterator[World]:
    """The helper started for ``user``; bangerd (if started) and the helper stopped after."""
    world = World(user, home, paths, _start_helper(paths, user))
    try:
        yield world
    finally:
        stop_daemon(world)
        stop_pid(world.helper_pid)


def daemon_pid(w: World) -> int | None:
    try:
        pid = int(w.paths.daemon_pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def stop_daemon(w: World) -> None:
    pid = daemon_pid(w)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid, 90)


def error_lines(stderr: str) -> list[str]:
    """What the CLI said after the build's progress lines (stage, notes, indented progress)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    while lines and lines[0].startswith(("▸ ", "  ", "note:", "warning:")):
        lines.pop(0)
    return lines


def ops(w: World) -> list[tuple[str, str | None, str, str | None]]:
    """(kind, stage, state, error) of every recorded operation, oldest first."""
    # closing(): a connection's own context manager commits but leaves it open,
    # and an open database file keeps a small filesystem from unmounting.
    db_uri = f"file:{w.paths.state_dir / 'banger.db'}?mode=ro"
    with closing(sqlite3.connect(db_uri, uri=True)) as db:
        rows = db.execute("SELECT kind, stage, state, error FROM operations ORDER BY created_at")
        return [(str(r[0]), r[1], str(r[2]), r[3]) for r in rows]


def root_owned(w: World) -> list[str]:
    """Paths under BANGER_HOME owned by root, except the helper's own files and lost+found."""
    found = []
    for dirpath, dirnames, filenames in os.walk(w.home):
        top = Path(dirpath)
        if top == w.paths.state_dir and "lost+found" in dirnames:
            dirnames.remove("lost+found")
        for name in dirnames + filenames:
            path = top / name
            rel = str(path.relative_to(w.home))
            if rel not in HELPER_FILES and path.lstat().st_uid == 0:
                found.append(rel)
    return sorted(found)


def check_helper(w: World) -> None:
    """The helper answers, and still refuses a bad request cleanly."""
    assert alive(w.helper_pid), "banger-helper is not running"
    client = HelperClient(w.paths.helper_socket, timeout=30)
    client.call("ping")
    with pytest.raises(HelperError, match="out_dir"):
        client.call("image_build", suite="bookworm", name="x", out_dir="/etc", mirror=None)
