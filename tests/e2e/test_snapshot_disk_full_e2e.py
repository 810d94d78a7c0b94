"""A full snapshot filesystem under ``vm snapshot`` and ``vm fork`` (issue #18 item 6).

One boot (fast init, 256 MiB). The owner's snapshot directory
(``<BANGER_HOME>/state/snapshots``) is made a small loop-mounted ext4:

1. 8 MiB: QEMU's save of the guest's memory and device state finds no space
   (QMP ``query-migrate``: ``Unable to write to file: No space left on
   device``). ``vm snapshot`` and ``vm fork`` each fail with one error line
   saying the snapshot filesystem is full, where, and how much a snapshot
   needs, with a hint (exit 1, a failed operation).
2. Room for the state, none for the disks: the daemon holds the operation
   before its ``copy_disks`` stage (the test-only stage delay), the test takes
   every free block, and the disk copy fails — the same one line, naming that
   step.

After each failure the source is the VM it was: running, the same QEMU
process, answering ``vm exec``, its filesystems thawed (a write and ``sync``
return); and nothing is left: no snapshot record, no temp snapshot directory,
no child, tap, lease or process. Unmounted, a snapshot works again.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from banger.daemon.stage_delay import MARKER
from banger.diskfull import DiskFull
from tests.e2e.harness import Banger, js
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.reliability.faults import (
    STAGE_DELAY_ENV,
    cli_background,
    free_bytes,
    log_offset,
    small_filesystem,
    start_daemon,
    stop_daemon,
    wait_for_log,
)
from tests.support import assert_refusal, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "dfa"
MEMORY_MIB = 256
#: Too small for any guest's saved state.
TINY_MIB = 8
#: Room for the saved state (at most the guest's memory), then filled before the disks.
ROOMY_MIB = MEMORY_MIB + 64
#: Seconds the daemon holds an operation before copy_disks (the test fills the fs then).
HOLD = 30


def refused_full(result: subprocess.CompletedProcess[str], snapshots: Path, step: str) -> None:
    """One error line: the snapshot filesystem is full, where, at which step, how much."""
    error = assert_refusal(
        result,
        DiskFull.exit_code,
        f"no space left on device in {snapshots} while {step} (snapshot of VM {VM}): "
        "it needs up to about ",
        hint=f"free space on the filesystem at {snapshots} ",
    )
    assert f"(memory {MEMORY_MIB} MiB at most, disks " in error, error
    assert f"nothing was kept, VM {VM} is as it was" in error, error


def source_as_it_was(b: Banger, pid: int, snapshots: Path) -> None:
    """Running in the same QEMU, answering, thawed; no snapshot, child or leftover."""
    shown = js(b, "vm", "show", VM)
    assert (shown["state"], shown["pid"]) == ("running", pid), shown
    assert b.banger("vm", "exec", VM, "--", "hostname", timeout=300).stdout == f"{VM}\n"
    # A frozen filesystem would block this write (the exec would time out).
    wrote = b.banger(
        "vm", "exec", VM, "--", "sh", "-c", "echo thawed > /root/probe; sync; cat /root/probe",
        timeout=300,
    )  # fmt: skip
    assert wrote.stdout == "thawed\n", wrote
    assert [v["name"] for v in js(b, "vm", "list")] == [VM]
    assert js(b, "vm", "snapshots") == []
    assert sorted(p.name for p in snapshots.iterdir()) == [], "a temp snapshot directory is left"
    assert_nothing_left(b, [vm_kept(b, VM)])


@contextmanager
def small_snapshots_fs(b: Banger, size_mib: int, **daemon_env: str) -> Iterator[Path]:
    """The snapshot directory on a ``size_mib`` ext4, seen by a bangerd started after the mount.

    bangerd (like every command run through ``ip netns exec``) lives in a mount
    namespace copied when it started, and ``/`` is private here: a mount or
    unmount made later in ours is not seen in its. So it is stopped around both
    (its VMs run on), and nothing of it holds the small filesystem at unmount.
    """
    snapshots = b.state_dir / "snapshots"  # banger.daemon.vms.snapshot_files.snapshots_dir
    if not snapshots.exists():  # the owner's, as bangerd makes it: seen again after unmount
        snapshots.mkdir(mode=0o700)
        os.chown(snapshots, b.user.uid, b.user.gid)
    stop_daemon(b)
    with small_filesystem(snapshots, size_mib, b.user.uid, b.user.gid):
        (snapshots / "lost+found").rmdir()  # not a snapshot: the daemon's sweep would remove it
        try:
            start_daemon(b, **daemon_env)
            yield snapshots
        finally:
            stop_daemon(b)
    start_daemon(b)


def fill(directory: Path) -> list[Path]:
    """Files (root's: no reserve holds them back) taking every free block under ``directory``."""
    made: list[Path] = []
    chunk = free_bytes(directory)
    while chunk >= 4096:
        path = directory / f"fill-{len(made)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            os.close(fd)
            path.unlink()
            chunk //= 2  # the extent tree needs a few blocks of its own: try smaller
            continue
        os.close(fd)
        made.append(path)
    return made


def test_a_full_snapshot_filesystem_fails_in_one_line_and_the_source_runs_on(b: Banger) -> None:
    b.banger("vm", "create", VM, "--init", "fast", "--memory", str(MEMORY_MIB), "--start")
    pid = vm_kept(b, VM).pid

    # 1. No room even for the guest's saved state.
    with small_snapshots_fs(b, TINY_MIB) as snapshots:
        state = "saving the guest's memory and device state"
        snap = b.banger("vm", "snapshot", VM, "--name", "s1", check=False, timeout=900)
        refused_full(snap, snapshots, state)
        source_as_it_was(b, pid, snapshots)
        fork = b.banger("vm", "fork", VM, "-n", "2", check=False, timeout=900)
        refused_full(fork, snapshots, state)
        assert f"vm.fork {VM} failed at stage snapshot" in fork.stderr, fork.stderr
        source_as_it_was(b, pid, snapshots)

    # 2. Room for the state; the disks find none (taken while the daemon holds the op).
    with small_snapshots_fs(b, ROOMY_MIB, **{STAGE_DELAY_ENV: f"copy_disks:{HOLD}"}) as snapshots:
        for args in (("vm", "snapshot", VM, "--name", "s1"), ("vm", "fork", VM, "-n", "2")):
            offset = log_offset(b)
            run = cli_background(b, *args)
            filled: list[Path] = []
            try:
                wait_for_log(b, offset, f"{MARKER}", 900)
                filled = fill(snapshots)
                out, err = run.communicate(timeout=900)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.communicate()
                for path in filled:
                    path.unlink()
            refused_full(
                subprocess.CompletedProcess(args, run.returncode, out, err),
                snapshots,
                "copying the guest's disks",
            )
            source_as_it_was(b, pid, snapshots)

    # Unmounted: the same snapshot is taken, and the source still runs.
    taken = js(b, "vm", "snapshot", VM, "--name", "s1")
    assert (taken["name"], taken["memory_mib"], taken["frozen"]) == ("s1", MEMORY_MIB, True)
    assert js(b, "vm", "show", VM)["state"] == "running"
    b.banger("vm", "snapshot-rm", "s1")
    b.banger("vm", "rm", VM)
    assert_nothing_left(b)
