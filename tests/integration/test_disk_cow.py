"""Copy-on-write root disks with the real qemu-img and cp."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from banger.disk.cow import (
    DmSnapshot,
    Qcow2Overlay,
    Reflink,
    RootDisk,
    SparseCopy,
    choose_strategy,
    reflink_supported,
    strategy_named,
)
from banger.errors import CommandError, Conflict, HelperError, InvalidArgument, NotFound

GIB = 1024**3


def fs_type(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """An 8 GiB sparse base holding a little data at both ends."""
    path = tmp_path / "images" / "rootfs.ext4"
    path.parent.mkdir()
    with open(path, "wb") as f:
        f.write(b"BASE-START" * 100)
        f.truncate(8 * GIB)
        f.seek(8 * GIB - 4096)
        f.write(b"E" * 4096)
    return path


@pytest.fixture
def vm_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vms" / "v1"
    path.mkdir(parents=True)
    return path


def test_qcow2_overlay_points_at_the_base_and_is_tiny(base: Path, vm_dir: Path) -> None:
    disk = Qcow2Overlay().create(base, vm_dir)
    assert disk == RootDisk(vm_dir / "root.qcow2", "qcow2", "qcow2")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disk.path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == 8 * GIB
    # cost independent of the base's size: the overlay holds metadata only
    assert disk.path.stat().st_size < 1024 * 1024
    # and the data reads through to the base
    out = vm_dir.parent / "head.raw"
    subprocess.run(
        [
            "qemu-img",
            "dd",
            "-f",
            "qcow2",
            "-O",
            "raw",
            f"if={disk.path}",
            f"of={out}",
            "bs=512",
            "count=1",
        ],
        capture_output=True,
        check=True,
    )
    assert out.read_bytes()[:10] == b"BASE-START"
    with pytest.raises(Conflict):
        Qcow2Overlay().create(base, vm_dir)
    Qcow2Overlay().remove(disk)
    assert not disk.path.exists()
    Qcow2Overlay().remove(disk)  # undo is idempotent


def test_sparse_copy_keeps_holes(base: Path, vm_dir: Path) -> None:
    disk = SparseCopy().create(base, vm_dir)
    assert disk == RootDisk(vm_dir / "root.ext4", "raw", "copy")
    assert disk.path.stat().st_size == 8 * GIB
    assert disk.path.stat().st_blocks * 512 < 1024 * 1024
    with open(disk.path, "rb") as f:
        assert f.read(10) == b"BASE-START"
        f.seek(8 * GIB - 4096)
        assert f.read() == b"E" * 4096
    SparseCopy().remove(disk)
    assert not disk.path.exists()
    assert list(vm_dir.iterdir()) == []


def test_missing_base(tmp_path: Path, vm_dir: Path) -> None:
    with pytest.raises(NotFound):
        SparseCopy().create(tmp_path / "absent.ext4", vm_dir)


def test_reflink_on_this_host(tmp_path: Path, base: Path, vm_dir: Path) -> None:
    """guest-boot.md measured ext4 here: no reflink. Wherever the test runs (ext4,
    tmpfs, btrfs, xfs), the probe and the strategy agree, and both paths assert."""
    supported = reflink_supported(tmp_path)
    assert not list(tmp_path.glob(".reflink-probe-*"))  # the probe cleans up
    if fs_type(tmp_path) == "ext2/ext3":  # how stat -f names ext4
        assert supported is False
    if supported:
        disk = Reflink().create(base, vm_dir)
        assert disk.format == "raw" and disk.path.stat().st_size == 8 * GIB
        Reflink().remove(disk)
    else:
        with pytest.raises(CommandError, match="cp failed"):
            Reflink().create(base, vm_dir)
    assert list(vm_dir.iterdir()) == []  # no temp file left behind


def test_choose_strategy(tmp_path: Path) -> None:
    assert choose_strategy("qemu", tmp_path, dm_usable=True).name == "qcow2"
    if reflink_supported(tmp_path):  # btrfs, xfs: a reflink wins whatever dm can do
        assert choose_strategy("firecracker", tmp_path, dm_usable=False).name == "reflink"
        assert choose_strategy("firecracker", tmp_path, dm_usable=True).name == "reflink"
    else:
        assert choose_strategy("firecracker", tmp_path, dm_usable=False).name == "copy"
        dm = choose_strategy("firecracker", tmp_path, dm_usable=True)
        assert dm.name == "dm-snapshot" and dm.requires_helper
    with pytest.raises(InvalidArgument, match="unknown vmm"):
        choose_strategy("kvmtool", tmp_path, dm_usable=False)


def test_strategies_by_name_and_dm_needs_the_helper(base: Path, vm_dir: Path) -> None:
    for name in ("qcow2", "reflink", "dm-snapshot", "copy"):
        assert strategy_named(name).name == name
    with pytest.raises(InvalidArgument):
        strategy_named("zfs")
    with pytest.raises(HelperError):
        DmSnapshot().create(base, vm_dir)
