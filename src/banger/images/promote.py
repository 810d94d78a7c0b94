"""``banger image promote``: a stopped VM's disks become the files of a new image.

No root is needed: the VM's files belong to the owner.

- The root disk is the VM's copy-on-write view of its image: a qcow2 overlay
  (or a raw sparse copy). ``qemu-img convert -O raw`` flattens it — base plus
  every change — into a sparse raw file, which is an ext4 filesystem again.
  The result stays finalized: promote starts from a banger image, and the
  guest contract lives in the root filesystem.
- The work seed is the source image's own seed, or (``--with-work-disk``) a
  copy of the VM's work disk minus what banger wrote for that one VM: its
  sshd host key and its authorized key. Every VM made from the new image gets
  fresh ones at its first start, as with any other image.
- Also left out: what ``[[file_sync]]`` and the git identity wrote (the
  owner's credentials must not travel into an image every VM inherits). The
  disk's own record says which files those are (:mod:`banger.disk.synced`);
  ``--include-synced`` keeps them. The record itself never goes into a seed.
"""

from __future__ import annotations

from pathlib import Path

from banger import proc
from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit
from banger.disk.synced import SYNCED_RECORD_PATH, read_synced_record
from banger.disk.workdisk import AUTHORIZED_KEYS_PATH, sparse_copy
from banger.errors import InvalidArgument

#: Converting a multi-GiB overlay reads every allocated block.
CONVERT_TIMEOUT = 3600.0
HOST_KEY_DIR = "/.banger"
HOST_KEY_PREFIX = "ssh_host_"


def convert_argv(root_disk: Path, out: Path) -> list[str]:
    """``qemu-img convert`` of a VM root disk (qcow2 overlay or raw) into a sparse raw file."""
    fmt = {".qcow2": "qcow2", ".ext4": "raw", ".raw": "raw"}.get(root_disk.suffix)
    if fmt is None:
        raise InvalidArgument(f"root disk {root_disk} is neither a qcow2 overlay nor a raw file")
    return ["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", str(root_disk), str(out)]


def flatten_root_disk(root_disk: Path, out: Path) -> None:
    """Write the whole view of ``root_disk`` (base + changes) to ``out``, sparse."""
    proc.run(convert_argv(root_disk, out), timeout=CONVERT_TIMEOUT)
    out.chmod(0o644)


def per_vm_paths(disk: Path) -> list[str]:
    """Files banger provisioned for one VM that are present on its work ``disk``."""
    found = [AUTHORIZED_KEYS_PATH] if ext4.exists(disk, AUTHORIZED_KEYS_PATH) else []
    if ext4.exists(disk, HOST_KEY_DIR):
        found += [
            f"{HOST_KEY_DIR}/{name}"
            for name in ext4.listdir(disk, HOST_KEY_DIR)
            if name.startswith(HOST_KEY_PREFIX)
        ]
    return found


def work_seed_from_disk(work_disk: Path, out: Path) -> list[str]:
    """Copy ``work_disk`` to ``out`` and remove the per-VM files; returns what was removed."""
    sparse_copy(work_disk, out)
    out.chmod(0o644)
    removed = per_vm_paths(out)
    if removed:
        edit = Ext4Edit()
        for path in removed:
            edit.remove(path)
        ext4.apply(out, edit)
    return removed


def leave_out_synced(seed: Path, *, include_synced: bool = False) -> list[str]:
    """Remove from ``seed`` the files file_sync and the git identity wrote (unless
    ``include_synced``) and the record naming them; returns the files removed."""
    record = read_synced_record(seed)
    wanted = [] if include_synced else list(record.written)
    found = ext4.stat_many(seed, [*wanted, SYNCED_RECORD_PATH])
    present = [p for p in wanted if (s := found.get(p)) is not None and s.kind != "dir"]
    edit = Ext4Edit()
    for path in present:
        edit.remove(path)
    if found.get(SYNCED_RECORD_PATH) is not None:
        edit.remove(SYNCED_RECORD_PATH)
    if edit.ops:
        ext4.apply(seed, edit)
    return present
