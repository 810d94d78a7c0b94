"""The dm-snapshot root disk strategy on the daemon's side (issue #22 item 8): the cow
file, the helper calls, the binding, the device-mapper probe. No device-mapper here: the
helper is stood in for by a recorder of its calls; the helper's own side is in
test_dm_snapshot.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from banger import hostinfo
from banger.disk.cow import COW_FILE, DmSnapshot, RootDisk, choose_strategy, strategy_named
from banger.errors import HelperError

VM = "0123456789ab"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, op: str, **args: Any) -> dict[str, Any]:
        self.calls.append((op, args))
        return {"device": f"/dev/mapper/banger-{args['vm_id']}"}


def test_create_makes_a_sparse_cow_as_large_as_the_image_and_asks_the_helper(
    tmp_path: Path,
) -> None:
    base = tmp_path / "rootfs.ext4"
    base.write_bytes(b"\0" * 4096)
    with open(base, "r+b") as f:
        f.truncate(64 << 20)
    vm_dir = tmp_path / VM
    vm_dir.mkdir()
    helper = Recorder()
    root = DmSnapshot().bound(helper).create(base, vm_dir)
    assert root == RootDisk(Path(f"/dev/mapper/banger-{VM}"), "raw", "dm-snapshot")
    cow = vm_dir / COW_FILE
    assert cow.stat().st_size == 64 << 20 and cow.stat().st_blocks == 0  # sparse
    assert helper.calls == [
        ("dm_snapshot_create", {"vm_id": VM, "origin": str(base), "cow": str(cow)})
    ]
    # A second create (after a host reboot) reuses the cow: the VM's writes are in it.
    with open(cow, "r+b") as f:
        f.write(b"written")
    DmSnapshot().bound(helper).create(base, vm_dir)
    assert cow.read_bytes()[:7] == b"written"
    DmSnapshot().bound(helper).remove(root)
    assert helper.calls[-1] == ("dm_snapshot_remove", {"vm_id": VM})


def test_an_unbound_strategy_says_the_helper_is_needed(tmp_path: Path) -> None:
    unbound = strategy_named("dm-snapshot")
    with pytest.raises(HelperError, match="root helper"):
        unbound.create(tmp_path / "rootfs.ext4", tmp_path / VM)
    with pytest.raises(HelperError):
        unbound.remove(RootDisk(Path(f"/dev/mapper/banger-{VM}"), "raw", "dm-snapshot"))


def test_firecracker_without_reflink_gets_dm_when_usable(tmp_path: Path) -> None:
    if hostinfo.reflink_supported(tmp_path):
        pytest.skip("this filesystem has reflink: the dm branch is not reached")
    assert choose_strategy("firecracker", tmp_path, dm_usable=True).name == "dm-snapshot"
    assert choose_strategy("firecracker", tmp_path, dm_usable=False).name == "copy"
    assert choose_strategy("qemu", tmp_path, dm_usable=True).name == "qcow2"


def test_the_probe_reads_proc_misc_so_the_owner_gets_roots_answer(tmp_path: Path) -> None:
    misc = tmp_path / "misc"
    misc.write_text(" 58 network_throughput\n236 device-mapper\n")
    assert hostinfo.dm_in_proc_misc(misc.read_text())
    assert not hostinfo.dm_in_proc_misc(" 58 network_throughput\n237 loop-control\n")
    probe = hostinfo.device_mapper_usable(misc)
    if shutil.which("dmsetup") is None:
        assert not probe and "not installed" in probe.detail
    else:
        assert probe.ok and "banger-helper makes snapshots" in probe.detail
        absent = hostinfo.device_mapper_usable(tmp_path / "absent")
        assert not absent and "not in /proc/misc" in absent.detail


def test_a_jailed_firecracker_never_gets_a_dm_device(tmp_path: Path) -> None:
    """The jail hard-links the VM's disks from the state directory: a /dev node is not one."""
    if hostinfo.reflink_supported(tmp_path):
        pytest.skip("this filesystem has reflink: the dm branch is not reached")
    assert choose_strategy("firecracker", tmp_path, dm_usable=True, jailed=True).name == "copy"
