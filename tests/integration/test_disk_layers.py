"""Frozen layers with the real qemu-img and qemu-io: a snapshot's root copied once,
restored VMs on empty overlays over it, each isolated, the data freed with the last link.

The directories are laid out as banger's are (a VM dir, a snapshot dir, beside each
other under one state dir) and filled by :mod:`banger.daemon.vms.snapshot_files`
itself; the "guest" writes are ``qemu-io`` writes through each VM's overlay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from banger.daemon.vms import snapshot_files as files
from banger.disk import layers
from banger.disk.cow import Qcow2Overlay
from banger.errors import BangerError, Conflict

MIB = 1 << 20


def qemu_io(disk: Path, command: str) -> str:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "fail" not in done.stdout.lower(), done
    return done.stdout


def pattern_at(disk: Path, byte: int, offset: int, length: int = MIB) -> bool:
    out = subprocess.run(
        ["qemu-io", "-r", "-f", "qcow2", "-c", f"read -P {byte:#x} {offset} {length}", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def chain(disk: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return list(json.loads(out))


def blocks(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def new_vm(state: Path, name: str) -> tuple[Path, Path, Path]:
    vm = state / "vms" / name
    vm.mkdir(parents=True)
    return vm / "root.qcow2", vm / "work.ext4", vm / "ssh_host_ed25519_key"


def snapshot(state: Path, name: str, root: Path, work: Path, key: Path) -> files.SnapshotLayout:
    snap = state / "snapshots" / name
    snap.mkdir(parents=True)
    layout = files.SnapshotLayout(snap, files.root_name(root))
    files.copy_disks(root, work, key, layout)
    return layout


def restore(state: Path, name: str, layout: files.SnapshotLayout) -> Path:
    root, work, key = new_vm(state, name)
    files.restore_disks(layout, root, work, key)
    return root


@pytest.fixture
def state(tmp_path: Path) -> Path:
    image = tmp_path / "images" / "rootfs.ext4"
    image.parent.mkdir()
    with open(image, "wb") as f:
        f.write(b"\x01" * MIB)  # the image's own data at 0
        f.truncate(256 * MIB)
    return tmp_path


def source_vm(state: Path) -> tuple[Path, Path, Path]:
    root, work, key = new_vm(state, "src")
    Qcow2Overlay().create(state / "images" / "rootfs.ext4", root.parent)
    with open(work, "wb") as f:
        f.truncate(16 * MIB)
    key.write_text("private\n")
    key.with_name(key.name + ".pub").write_text("public\n")
    qemu_io(root, f"write -P 0x22 {MIB} {4 * MIB}")  # what the source wrote: 4 MiB
    return root, work, key


def test_children_share_the_frozen_layer_and_keep_it_after_the_snapshot_goes(
    state: Path,
) -> None:
    src = source_vm(state)
    layout = snapshot(state, "s1", *src)
    layer = layout.root_disk
    assert layers.is_layer(layer.name) and layers.layers_in(layout.dir) == [layer.name]
    assert layer.stat().st_mode & 0o777 == layers.FROZEN_MODE
    # the source keeps writing its own overlay, never the layer
    qemu_io(src[0], f"write -P 0x33 {MIB} {MIB}")
    assert pattern_at(layer, 0x22, MIB)

    c1 = restore(state, "c1", layout)
    c2 = restore(state, "c2", layout)
    for child in (c1, c2):
        info = chain(child)
        assert [Path(str(e["filename"])).name for e in info] == [
            "root.qcow2",
            layer.name,
            "rootfs.ext4",
        ]
        assert info[0]["backing-filename"] == layer.name  # relative: its own link
        assert (child.parent / layer.name).stat().st_ino == layer.stat().st_ino
        assert child.stat().st_blocks * 512 < MIB  # empty overlay, not a copy
        assert (child.parent / "work.ext4").stat().st_size == 16 * MIB
        assert pattern_at(child, 0x22, MIB, 4 * MIB) and pattern_at(child, 0x01, 0)

    # each child's writes are its own
    qemu_io(c1, f"write -P 0x44 {MIB} {MIB}")
    qemu_io(c2, f"write -P 0x55 {MIB} {MIB}")
    assert pattern_at(c1, 0x44, MIB) and pattern_at(c2, 0x55, MIB)
    assert pattern_at(layer, 0x22, MIB) and pattern_at(src[0], 0x33, MIB)

    # a snapshot of a child carries the whole chain: its copy on top, the layer linked
    s2 = snapshot(state, "s2", c1, c1.parent / "work.ext4", c1.parent / "ssh_host_ed25519_key")
    assert sorted(layers.layers_in(s2.dir)) == sorted([layer.name, s2.root])
    grand = restore(state, "g1", s2)
    assert [Path(str(e["filename"])).name for e in chain(grand)][:3] == [
        "root.qcow2",
        s2.root,
        layer.name,
    ]
    assert pattern_at(grand, 0x44, MIB) and pattern_at(grand, 0x22, 2 * MIB)

    # removing the snapshot directories leaves every child readable through its links
    for snap_dir in (layout.dir, s2.dir):
        for f in snap_dir.iterdir():
            f.unlink()
        snap_dir.rmdir()
    assert pattern_at(c2, 0x55, MIB) and pattern_at(c2, 0x22, 2 * MIB)
    assert pattern_at(grand, 0x44, MIB)
    assert (c1.parent / layer.name).stat().st_nlink == 3  # c1, c2, g1


def test_removing_every_user_frees_the_layer(state: Path) -> None:
    src = source_vm(state)
    layout = snapshot(state, "s1", *src)
    layer_size = layout.root_disk.stat().st_blocks * 512
    assert layer_size >= 4 * MIB
    children = [restore(state, f"c{k}", layout) for k in range(3)]
    # three children cost three small overlays and three work copies, not three roots
    for child in children:
        assert child.stat().st_blocks * 512 < MIB
        assert blocks(child.parent) < layer_size + MIB  # the rest is the shared layer's link
    inode = layout.root_disk.stat().st_ino
    assert layout.root_disk.stat().st_nlink == 4
    statvfs = os.statvfs(state)
    before = statvfs.f_bfree * statvfs.f_frsize
    for d in [layout.dir] + [c.parent for c in children]:
        for f in d.iterdir():
            f.unlink()
    after = os.statvfs(state)
    # the last link gone frees the layer's blocks (the overlays' too)
    assert after.f_bfree * after.f_frsize - before >= layer_size - MIB
    assert not any(p.stat().st_ino == inode for p in state.rglob("layer-*"))


def test_a_failed_restore_leaves_the_snapshot_whole(state: Path) -> None:
    layout = snapshot(state, "s1", *source_vm(state))
    root, work, key = new_vm(state, "c1")
    root.write_text("taken")
    with pytest.raises(Conflict, match="already exists"):
        files.restore_disks(layout, root, work, key)
    assert layout.root_disk.stat().st_nlink == 1
    root.unlink()
    (root.parent / "work.ext4").mkdir()  # the work copy fails after the root was made
    with pytest.raises(BangerError):
        files.restore_disks(layout, root, work, key)
    assert pattern_at(layout.root_disk, 0x22, MIB)


def test_overlays_refuse_a_backing_that_is_not_a_layer(tmp_path: Path) -> None:
    with pytest.raises(BangerError, match="not a layer file name"):
        layers.create_overlay("../root.qcow2", tmp_path / "root.qcow2")
    assert list(tmp_path.iterdir()) == []


def test_a_snapshot_on_another_filesystem_gives_a_frozen_copy_of_the_layer(
    state: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == state.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    other = Path(tempfile.mkdtemp(dir=shm))
    try:
        layout = snapshot(other, "s1", *source_vm(state))
        child = restore(state, "c1", layout)
        link = child.parent / layout.root
        assert link.stat().st_ino != layout.root_disk.stat().st_ino  # a copy: no link across
        assert link.stat().st_mode & 0o777 == layers.FROZEN_MODE
        assert pattern_at(child, 0x22, MIB, 4 * MIB)
    finally:
        shutil.rmtree(other)
