"""banger.diskfull: every shape of "no space left" is recognised, nothing else is."""

from __future__ import annotations

import errno
from pathlib import Path

from banger.daemon.vms.snapshot_files import allocated_mib
from banger.diskfull import DiskFull, disk_full_is_said
from banger.errors import BangerError, CommandError, Conflict
from banger.vmm.qemu_snapshot import SnapshotError


def test_a_full_disk_is_recognised_in_every_shape() -> None:
    assert disk_full_is_said(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full_is_said(OSError(errno.EDQUOT, "Disk quota exceeded"))
    cp = CommandError(
        ["cp", "a", "b"], returncode=1, stderr="cp: error writing 'b': No space left on device"
    )
    assert disk_full_is_said(cp)
    # QEMU's migration error, as query-migrate words it (checked against QEMU 7.2).
    qemu = SnapshotError("QEMU: the save failed: Unable to write to file: No space left on device")
    assert disk_full_is_said(qemu)


def test_other_failures_are_not_called_a_full_disk() -> None:
    assert not disk_full_is_said(OSError(errno.EIO, "Input/output error"))
    assert not disk_full_is_said(CommandError(["cp"], returncode=1, stderr="cp: Permission denied"))
    assert not disk_full_is_said(SnapshotError("QEMU: the save failed: failed"))
    assert not disk_full_is_said(Conflict("VM x is stopped"))
    assert not disk_full_is_said(RuntimeError("No space left on device"))  # not ours to word
    # Already worded: never wrapped a second time.
    assert not disk_full_is_said(DiskFull("no space left on device in /x while copying"))
    assert isinstance(DiskFull("x"), BangerError) and DiskFull.exit_code == 1


def test_allocated_mib_counts_blocks_not_apparent_size(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB apparent, nothing allocated
    dense = tmp_path / "dense"
    dense.write_bytes(b"x" * ((1 << 20) + 1))  # a byte over 1 MiB: rounds up to 2
    assert allocated_mib(sparse) == 0
    assert allocated_mib(sparse, dense, tmp_path / "missing") == 2
