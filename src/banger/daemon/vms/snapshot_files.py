"""A snapshot on disk: ``<state>/snapshots/<id>/``, published whole or not at all.

Layout (file names fixed here, so nothing else builds them)::

    state                  QEMU: the migration stream (devices + memory)
                           Firecracker: the VM state file
    memory                 Firecracker only: the guest memory file
    layer-<hex>.qcow2      QEMU: the root disk as it was — a copy of the VM's qcow2
                           overlay, made read-only: a frozen layer
                           (:mod:`banger.disk.layers`), and hard links of the
                           layers below it when the VM was itself restored; the
                           bottom is the image's rootfs, which the snapshot row
                           pins. Restored VMs get an empty overlay on it.
    root.qcow2|root.ext4   snapshots from before layers (QEMU), and Firecracker's
                           raw root: restored by copying
    work.ext4              the work disk (/root)
    ssh_host_ed25519_key   the guest sshd's host key pair: its sshd holds it in
    ssh_host_ed25519_key.pub  memory, so a restored VM is pinned to the same key
    snapshot.json          what the store row says, for a human looking at the dir

It is written under ``.tmp-<id>`` and renamed into place (one ``rename``), then
recorded in the store; :func:`sweep` removes what a crash left between those.
Disk copies are sparse (``cp --sparse=always``, a reflink where the filesystem
has one): their cost follows the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.disk import layers
from banger.disk.workdisk import sparse_copy
from banger.errors import Conflict
from banger.paths import Paths
from banger.rmtree import discard_tree

STATE = "state"
MEMORY = "memory"
WORK = "work.ext4"
HOST_KEY = "ssh_host_ed25519_key"
INFO = "snapshot.json"
_TMP = ".tmp-"


def snapshots_dir(paths: Paths) -> Path:
    return paths.state_dir / "snapshots"


def snapshot_dir(paths: Paths, snapshot_id: str) -> Path:
    return snapshots_dir(paths) / snapshot_id


def temp_dir(paths: Paths, snapshot_id: str) -> Path:
    return snapshots_dir(paths) / f"{_TMP}{snapshot_id}"


def root_name(root_disk: Path) -> str:
    """The snapshot's name for a root disk: a new layer for a qcow2 overlay, else ``root.ext4``."""
    return layers.new_layer_name() if root_disk.suffix == ".qcow2" else "root.ext4"


@dataclass(frozen=True)
class SnapshotLayout:
    """The files of one snapshot directory."""

    dir: Path
    root: str

    @property
    def state(self) -> Path:
        return self.dir / STATE

    @property
    def memory(self) -> Path:
        return self.dir / MEMORY

    @property
    def root_disk(self) -> Path:
        return self.dir / self.root

    @property
    def work_disk(self) -> Path:
        return self.dir / WORK

    @property
    def host_key(self) -> Path:
        return self.dir / HOST_KEY


def make_temp(paths: Paths, snapshot_id: str) -> Path:
    parent = snapshots_dir(paths)
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = temp_dir(paths, snapshot_id)
    tmp.mkdir(mode=0o700)
    return tmp


def copy_disks(root: Path, work: Path, host_key: Path, into: SnapshotLayout) -> None:
    """Sparse copies of both disks and the host key pair (the VM must be paused).

    A qcow2 root becomes the snapshot's top layer (copied, then made read-only),
    with links of the layers its chain already had (a VM restored from a snapshot).
    """
    if layers.is_layer(into.root):
        below = layers.chain_layers(layers.read_chain(root))
        layers.link_layers(below, root.parent, into.dir)
        sparse_copy(root, into.root_disk)
        layers.freeze(into.root_disk)
    else:
        sparse_copy(root, into.root_disk)
    sparse_copy(work, into.work_disk)
    for suffix in ("", ".pub"):
        shutil.copy2(f"{host_key}{suffix}", f"{into.host_key}{suffix}")


def restore_disks(snapshot: SnapshotLayout, root: Path, work: Path, host_key: Path) -> None:
    """The snapshot's disks and key for a new VM's paths (never the snapshot's own files:
    the VM writes its disks).

    A layered root: the snapshot's layers linked into the VM's directory and an
    empty overlay on the top one. Otherwise (and the work disk) a copy. The
    caller removes the VM's directory on failure: links and overlay go with it.
    """
    copies = [(snapshot.work_disk, work)]
    if layers.is_layer(snapshot.root):
        if root.exists():
            raise Conflict(f"{root} already exists")
        layers.link_layers(layers.layers_in(snapshot.dir), snapshot.dir, root.parent)
        layers.create_overlay(snapshot.root, root)
    else:
        copies.insert(0, (snapshot.root_disk, root))
    for source, dest in copies:
        if dest.exists():
            raise Conflict(f"{dest} already exists")
        sparse_copy(source, dest)
        dest.chmod(0o600)
    for suffix in ("", ".pub"):
        shutil.copy2(f"{snapshot.host_key}{suffix}", f"{host_key}{suffix}")


def allocated_mib(*disks: Path) -> int:
    """MiB the ``disks`` hold (their allocated blocks: what a sparse copy writes), rounded up."""
    allocated = sum(d.stat().st_blocks * 512 for d in disks if d.exists())
    return -(-allocated // (1 << 20))


def disk_usage(path: Path) -> int:
    """Bytes actually allocated under ``path`` (sparse files count what they hold)."""
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def publish(tmp: Path, dest: Path, info: dict[str, Any]) -> None:
    """Write ``snapshot.json``, flush, and rename the directory into place in one step."""
    (tmp / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    for f in tmp.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    tmp.rename(dest)


def sweep(paths: Paths, known: Set[str], busy: Set[str]) -> list[str]:
    """Remove temp dirs and unrecorded snapshot dirs, except those in ``busy``."""
    parent = snapshots_dir(paths)
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        snapshot_id = entry.name.removeprefix(_TMP)
        if snapshot_id in busy or (entry.name == snapshot_id and snapshot_id in known):
            continue
        discard_tree(entry)
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def links_at(recorded: dict[Path, Path]) -> Iterator[None]:
    """Symlinks ``recorded path -> new file`` for the duration of a Firecracker load.

    Firecracker reopens each disk at the host path its snapshot recorded (the
    source VM's own files). Restoring places links there, only where nothing
    is (the source VM is gone: it held the address the restore needs), and
    removes them — and the directories it had to create — once the new
    Firecracker has the files open.
    """
    made_dirs: list[Path] = []
    made_links: list[Path] = []
    try:
        for path, target in recorded.items():
            if os.path.lexists(path):
                raise Conflict(
                    f"the snapshot's disk path {path} is in use: Firecracker reopens disks "
                    "where the snapshot recorded them",
                    hint="delete the VM that owns it before restoring",
                )
            missing = [p for p in reversed(path.parents) if not p.exists()]
            for d in missing:
                d.mkdir(mode=0o700)
                made_dirs.append(d)
            path.symlink_to(target)
            made_links.append(path)
        yield
    finally:
        for link in made_links:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
