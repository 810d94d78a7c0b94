"""Fault injection: the disk fills up during ``banger image build``.

The real production path, as in :mod:`tests.image_cache`: a throwaway owner
runs ``banger image build debian:bookworm`` (the CLI auto-starts ``bangerd``,
whose ImageService asks a real root ``banger-helper`` for ``image_build``:
mmdebstrap through the host's apt mirror, then ``mkfs.ext4 -d``), but the
owner's state directory is a small loop-mounted ext4, too small for the build.

Each case fills the disk at a different step (while mmdebstrap downloads and
unpacks; while the ext4 images are written after mmdebstrap succeeded) and
then asserts what the user is promised:

- the CLI fails with ONE error line (plus at most a hint) saying the disk is
  full and naming the stage ``build_image``, and no traceback;
- the operation is recorded failed at ``build_image``;
- no image (listed or on disk), nothing under ``state/tmp``, nothing owned by
  root in the owner's tree (the helper runs mmdebstrap as root inside it: a
  root-owned leftover is one the owner cannot even delete), and the free
  space is back — right after the failure and again after bangerd restarts
  (its startup reconciliation runs);
- the helper still answers and still refuses a bad request cleanly.

Helper and daemon run in the host network namespace: the build needs the
package mirror and creates no bridge, tap or NAT rule.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger.errors import HelperError
from banger.helper.client import HelperClient
from banger.paths import Paths
from tests.image_cache import _as_owner, _start_helper, _stop
from tests.reliability.faults import alive, free_bytes, small_filesystem, wait_gone
from tests.reliability_counts import ReliabilityCounts
from tests.support import User, needs_root, short_tmpdir, throwaway_user

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

BUILD_TIMEOUT = 1200
#: Files the test's own helper writes as root (not the build's doing).
HELPER_FILES = ("state/helper.log", "run/helper.sock")
#: Free space may differ by a few blocks: bangerd's log and database grow.
FREE_SLACK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """A state filesystem of ``size_mib``, too small for the build's step ``step``."""

    size_mib: int
    step: str


@dataclass
class Install:
    case: Case
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

    def ok(self, *args: str) -> str:
        result = self.banger(*args)
        assert result.returncode == 0, f"banger {' '.join(args)}: {result.stderr}"
        return result.stdout


@pytest.fixture
def install(request: pytest.FixtureRequest) -> Iterator[Install]:
    case: Case = request.param
    with throwaway_user("bgd") as user, short_tmpdir("bgd-") as home:
        paths = Paths.from_env({"BANGER_HOME": str(home)})
        os.chown(home, user.uid, user.gid)
        for d in (paths.runtime_dir, paths.config_dir):
            d.mkdir(mode=0o700)
            os.chown(d, user.uid, user.gid)
        mirror = os.environ.get("BANGER_TEST_DEBIAN_MIRROR")
        if mirror:
            paths.config_file.write_text(f'[images]\ndebian_mirror = "{mirror}"\n')
            os.chown(paths.config_file, user.uid, user.gid)
        with small_filesystem(paths.state_dir, case.size_mib, user.uid, user.gid):
            helper = _start_helper(paths, user)
            b = Install(case, user, home, paths, helper)
            try:
                yield b
            finally:
                stop_daemon(b)
                _stop(b.helper_pid)


def daemon_pid(b: Install) -> int | None:
    try:
        pid = int(b.paths.daemon_pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def stop_daemon(b: Install) -> None:
    pid = daemon_pid(b)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid, 90)


def error_lines(stderr: str) -> list[str]:
    """What the CLI said after the build's progress lines (stage, notes, indented progress)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    while lines and lines[0].startswith(("▸ ", "  ", "note:", "warning:")):
        lines.pop(0)
    return lines


def ops(b: Install) -> list[tuple[str, str | None, str, str | None]]:
    # closing(): a connection's own context manager commits but leaves it open,
    # and an open database file keeps the small filesystem from unmounting.
    db_uri = f"file:{b.paths.state_dir / 'banger.db'}?mode=ro"
    with closing(sqlite3.connect(db_uri, uri=True)) as db:
        rows = db.execute("SELECT kind, stage, state, error FROM operations ORDER BY created_at")
        return [(str(r[0]), r[1], str(r[2]), r[3]) for r in rows]


def root_owned(b: Install) -> list[str]:
    """Paths under BANGER_HOME owned by root, except the helper's own files and lost+found."""
    found = []
    for dirpath, dirnames, filenames in os.walk(b.home):
        top = Path(dirpath)
        if top == b.paths.state_dir and "lost+found" in dirnames:
            dirnames.remove("lost+found")
        for name in dirnames + filenames:
            path = top / name
            rel = str(path.relative_to(b.home))
            if rel not in HELPER_FILES and path.lstat().st_uid == 0:
                found.append(rel)
    return sorted(found)


def leftovers(b: Install, free_before: int) -> dict[str, list[str]]:
    state = b.paths.state_dir
    found: dict[str, list[str]] = {}
    found["images listed"] = [str(i) for i in json.loads(b.ok("image", "list", "--json"))]
    images = b.paths.images_dir
    found["image directories"] = sorted(p.name for p in images.iterdir()) if images.is_dir() else []
    tmp = b.paths.tmp_dir
    # Every path under tmp/ (not just the top): the report shows what a build left.
    found["temp files"] = (
        sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.is_dir() else []
    )
    found["root-owned files"] = root_owned(b)
    found["mounts under the state dir"] = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(f"{state}/")
    ]
    lost = free_before - free_bytes(state)
    found["space not given back"] = [f"{lost} bytes"] if lost > FREE_SLACK else []
    return found


def check_helper(b: Install) -> None:
    """The helper survived the failed build: it answers, and still refuses bad requests."""
    assert alive(b.helper_pid), "banger-helper died during the failed build"
    client = HelperClient(b.paths.helper_socket, timeout=30)
    client.call("ping")
    with pytest.raises(HelperError, match="out_dir"):
        client.call("image_build", suite="bookworm", name="x", out_dir="/etc", mirror=None)


@pytest.mark.parametrize(
    "install",
    [
        # mmdebstrap's downloads (~100 MiB of .debs) and the unpacked tree do not fit.
        pytest.param(Case(200, "mmdebstrap"), id="during-mmdebstrap"),
        # The tree (~380 MiB) fits, its ext4 image (as much again) does not.
        pytest.param(Case(700, "mkfs.ext4 rootfs.ext4"), id="during-mkfs"),
    ],
    indirect=True,
)
def test_disk_full_during_image_build(
    install: Install, reliability_counts: ReliabilityCounts
) -> None:
    b = install
    assert json.loads(b.ok("image", "list", "--json")) == []  # auto-starts bangerd
    free_before = free_bytes(b.paths.state_dir)

    started = time.monotonic()
    result = b.banger("image", "build", "debian:bookworm", "--name", "full", timeout=BUILD_TIMEOUT)
    reliability_counts.fault()
    took = time.monotonic() - started
    assert result.returncode != 0, f"the build succeeded on a full disk:\n{result.stderr}"

    said = error_lines(result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert said, f"no error line after {took:.0f}s:\n{result.stderr}"
    assert len(said) <= 2, f"more than an error and a hint:\n{result.stderr}"
    assert said[0].startswith("error: "), result.stderr
    assert "build_image" in said[0], result.stderr
    assert "no space left on device" in said[0].lower(), result.stderr
    assert f"({b.case.step})" in said[0], result.stderr
    assert len(said) == 1 or said[1].startswith("hint: "), result.stderr

    [(kind, stage, state, error)] = ops(b)
    assert (stage, state) == ("build_image", "failed"), (kind, stage, state, error)
    assert error is not None and "no space left on device" in error.lower(), error

    reliability_counts.check_leaks(leftovers(b, free_before))
    check_helper(b)

    stop_daemon(b)
    assert json.loads(b.ok("image", "list", "--json")) == []  # auto-starts it again
    assert (b.paths.state_dir / "reconcile.json").is_file()
    reliability_counts.restart()
    reliability_counts.check_leaks(leftovers(b, free_before))
    [(_, stage, state, _)] = ops(b)
    assert (stage, state) == ("build_image", "failed")
    check_helper(b)
