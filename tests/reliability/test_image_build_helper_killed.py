"""Fault injection: the root helper is killed -9 in the middle of ``banger image build``.

A real build as a throwaway owner (:mod:`tests.reliability.build_world`):
once mmdebstrap is installing packages in its chroot (/proc, /sys, /dev
mounted in the tree), the helper is SIGKILLed. What the user is promised:

- the CLI fails with one error line naming the helper, no traceback, and the
  operation is recorded failed at ``build_image``;
- the build dies with the helper: within :data:`DIES_WITHIN` seconds no
  process of it is left (mmdebstrap, or anything chrooted into its tree)
  and nothing is mounted under BANGER_HOME. Before the fix mmdebstrap went on
  as an orphan (installing into the owner's directory, its mounts in the
  host's table) until it next wrote to the helper's closed pipe;
- after the helper and bangerd restart, reconciliation has the helper remove
  the root-owned staging directory: no image, empty ``state/images`` and
  ``state/tmp``, nothing root-owned under BANGER_HOME, no mounts, and
  ``reconcile.json`` says so;
- the helper answers, and a bad ``image build`` is refused cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.images.tether import STAGE_MOUNT_POINT
from banger.mountinfo import mount_points, mounts_below
from tests.reliability.build_world import (
    World,
    check_helper,
    error_lines,
    ops,
    owner_home,
    root_owned,
    serving,
    stop_daemon,
)
from tests.reliability_counts import ReliabilityCounts
from tests.support import alive, needs_root, wait_gone, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

#: How long the build may outlive the helper. The kernel kills it at once;
#: the slack is for a loaded machine. An orphaned mmdebstrap ran on for
#: 20 s and more (until the end of its package installation).
DIES_WITHIN = 10.0
#: mmdebstrap's progress line for its longest step, in its chroot with mounts.
INSTALLING = "installing remaining packages inside the chroot"
#: Until mmdebstrap reaches that step (apt update, downloads, essential packages).
REACHES_INSTALL = 600.0


@pytest.fixture
def world() -> Iterator[World]:
    with owner_home("bgk") as (user, home, paths):
        paths.state_dir.mkdir(mode=0o700)
        os.chown(paths.state_dir, user.uid, user.gid)
        with serving(user, home, paths) as w:
            yield w


def build_processes(w: World) -> list[str]:
    """Processes of a build under BANGER_HOME: mmdebstrap, or chrooted into its tree."""
    home = str(w.home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            root = os.readlink(entry / "root")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        # mmdebstrap works on its build directory bound at /mnt in its own mount
        # namespace (banger.helper.bindexec): its target and its chroots are
        # /mnt/tree there, not paths under BANGER_HOME.
        in_stage = f"{STAGE_MOUNT_POINT}/"
        if (
            "mmdebstrap" in cmdline and (home in cmdline or f" {in_stage}" in cmdline)
        ) or root.startswith((f"{home}/", in_stage)):
            found.append(f"{entry.name}: {cmdline.strip()[:160]}")
    return found


def host_mounts_at_the_stage_point() -> list[str]:
    """The host's mount points at or under /mnt (the machine may have its own there)."""
    points = mount_points(Path("/proc/self/mountinfo").read_bytes())
    under = f"{STAGE_MOUNT_POINT}/"
    return sorted(p for p in points if p == STAGE_MOUNT_POINT or p.startswith(under))


def mmdebstrap_pid(w: World) -> int | None:
    """A running mmdebstrap's pid (``perl /usr/bin/mmdebstrap …``, not a wrapper of it)."""
    for line in build_processes(w):
        pid, _, cmdline = line.partition(": ")
        if any(a.endswith("/mmdebstrap") for a in cmdline.split()[:3]):
            return int(pid)
    return None


def wait_until_installing(w: World, cli_pid: int) -> Path:
    """The build's progress file once mmdebstrap installs packages in its chroot."""
    deadline = time.monotonic() + REACHES_INSTALL
    while time.monotonic() < deadline:
        assert alive(cli_pid) or not alive(w.helper_pid), "the build ended before the kill"
        for progress in w.paths.tmp_dir.glob("register-*/progress.log"):
            if INSTALLING in progress.read_text(errors="replace"):
                return progress
        time.sleep(0.2)
    raise AssertionError(f"mmdebstrap did not reach {INSTALLING!r} in {REACHES_INSTALL:.0f}s")


def build_leftovers(w: World) -> dict[str, list[str]]:
    tmp, images = w.paths.tmp_dir, w.paths.images_dir
    return {
        "images listed": [str(i) for i in json.loads(w.ok("image", "list", "--json"))],
        "image directories": sorted(p.name for p in images.iterdir()) if images.is_dir() else [],
        "temp files": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        if tmp.is_dir()
        else [],
        "root-owned files": root_owned(w),
        "mounts under BANGER_HOME": mounts_below(w.home),
        "build processes": build_processes(w),
    }


def test_helper_killed_during_image_build(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    w = world
    assert json.loads(w.ok("image", "list", "--json")) == []  # auto-starts bangerd
    before = host_mounts_at_the_stage_point()
    cli = w.banger_in_background("image", "build", "debian:bookworm", "--name", "killed")
    try:
        progress = wait_until_installing(w, cli.pid)
        staging = progress.parent

        def chroot_mounted() -> list[str] | None:
            """mmdebstrap's chroot mounts (its /proc among them), seen in its namespace."""
            pid = mmdebstrap_pid(w)
            if pid is None:
                return None
            try:
                inside = mounts_below(Path(STAGE_MOUNT_POINT), Path(f"/proc/{pid}/mountinfo"))
            except OSError:  # it moved on to another process meanwhile
                return None
            return inside if any(p.endswith("/proc") for p in inside) else None

        # Well inside the step: packages unpacking, the chroot's /proc mounted.
        wait_until(chroot_mounted, REACHES_INSTALL, f"mmdebstrap's chroot mounts for {staging}")

        os.kill(w.helper_pid, signal.SIGKILL)
        reliability_counts.fault()
        killed = time.monotonic()
        wait_gone(w.helper_pid)
        _, stderr = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()

    # The build died with the helper, and took its mounts with it (none were
    # ever in the host's table: not under BANGER_HOME, nothing new at /mnt).
    assert host_mounts_at_the_stage_point() == before
    while build_processes(w) or mounts_below(w.home):
        if time.monotonic() - killed > DIES_WITHIN:
            reliability_counts.check_leaks(
                {
                    f"build processes {DIES_WITHIN:.0f}s after the kill": build_processes(w),
                    f"mounts {DIES_WITHIN:.0f}s after the kill": mounts_below(w.home),
                }
            )
        time.sleep(0.1)

    assert cli.returncode != 0, f"the build succeeded without its helper:\n{stderr}"
    said = error_lines(stderr)
    assert "Traceback" not in stderr, stderr
    assert said, stderr
    assert len(said) <= 2, f"more than an error and a hint:\n{stderr}"
    assert said[0].startswith("error: ") and "helper" in said[0], stderr
    assert len(said) == 1 or said[1].startswith("hint: "), stderr
    [(kind, stage, state, error)] = ops(w)
    assert (kind, stage, state) == ("image.build", "build_image", "failed"), (kind, stage, error)
    assert error is not None and "helper" in error, error
    # The owner's daemon could not delete root's half-built tree: the helper must.
    assert staging.is_dir() and any(p.lstat().st_uid == 0 for p in staging.rglob("*"))

    w.start_helper()
    stop_daemon(w)
    assert json.loads(w.ok("image", "list", "--json")) == []  # auto-starts a new bangerd
    reliability_counts.restart()
    reliability_counts.check_leaks(build_leftovers(w))
    repaired = json.loads((w.paths.state_dir / "reconcile.json").read_text())["repaired"]
    removed = f"tmp/{staging.name}: removed by the helper (root's files of an interrupted image op)"
    assert removed in repaired, repaired
    [(_, stage, state, _)] = ops(w)
    assert (stage, state) == ("build_image", "failed")

    check_helper(w)
    refused = w.banger("image", "build", "debian:bookworm", "--name", "Not A Name!")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    [line, *rest] = error_lines(refused.stderr)
    assert line.startswith("error: ") and "name" in line, refused.stderr
    assert len(rest) <= 1, refused.stderr
    reliability_counts.hostile()
    assert len(ops(w)) <= 2 and mmdebstrap_pid(w) is None
    reliability_counts.check_leaks(build_leftovers(w))
