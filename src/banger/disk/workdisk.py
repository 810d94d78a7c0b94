"""The per-VM work disk: a raw ext4 image mounted at ``/root`` in the guest.

Created from the image's work seed by a sparse copy, grown offline with
``resize2fs`` (never shrunk), then provisioned by editing the image with one
debugfs batch (:mod:`banger.disk.ext4`): no mount, no root.

Paths on the disk are relative to its root, which is the guest's ``/root``:
``/.ssh/authorized_keys`` here is ``/root/.ssh/authorized_keys`` there.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from banger import proc
from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit, image_path
from banger.disk.durable import publish_file
from banger.disk.synced import SYNCED_RECORD_PATH, SyncedRecord, read_synced_record, stale_files
from banger.errors import BangerError, CommandError, Conflict, InvalidArgument, NotFound

MIB = 1024 * 1024

#: Where the image's sshd drop-in looks for the per-VM host key
#: (``HostKey /root/.banger/ssh_host_ed25519_key``), relative to the work disk.
HOST_KEY_PATH = "/.banger/ssh_host_ed25519_key"
AUTHORIZED_KEYS_PATH = "/.ssh/authorized_keys"


def sparse_copy(src: Path, dest: Path) -> None:
    """Copy keeping holes (``cp --sparse=always``): cost follows the data, not the size."""
    proc.run(["cp", "--sparse=always", "--", str(src), str(dest)])


def _check_size(size_bytes: int) -> None:
    if size_bytes <= 0 or size_bytes % MIB:
        raise InvalidArgument(
            f"work disk size must be a positive whole number of MiB (got {size_bytes} bytes)"
        )


def _fsck(disk: Path) -> None:
    # resize2fs insists on a freshly checked filesystem; -p repairs only what is safe.
    # Exit 1 means "errors corrected", still fine; 2 and up means trouble.
    result = proc.run(["e2fsck", "-fp", str(disk)], check=False)
    if result.returncode not in (0, 1):
        raise CommandError(
            result.argv, returncode=result.returncode, stderr=result.err + result.out
        )


def grow_work_disk(disk: Path, size_bytes: int) -> bool:
    """Grow the image file and its filesystem to ``size_bytes``; False if already that size.

    Refuses to shrink: the guest's files live on this disk.
    """
    _check_size(size_bytes)
    if not disk.is_file():
        raise NotFound(f"work disk not found: {disk}")
    current = disk.stat().st_size
    if size_bytes < current:
        raise InvalidArgument(
            f"work disk {disk} is {current // MIB} MiB; shrinking it to {size_bytes // MIB} MiB "
            "is refused",
            hint="work disks only grow: pick a size at least as large as the current one",
        )
    if size_bytes == current:
        return False
    _fsck(disk)
    os.truncate(disk, size_bytes)  # a hole: allocates nothing
    proc.run(["resize2fs", str(disk)])  # no size: fill the file
    return True


def create_work_disk(seed: Path, dest: Path, size_bytes: int) -> Path:
    """Make ``dest`` from the work seed, grown to ``size_bytes``; atomic (temp + rename)."""
    _check_size(size_bytes)
    if not seed.is_file():
        raise NotFound(f"work seed not found: {seed}", hint="re-finalize or re-pull the image")
    if dest.exists():
        raise Conflict(f"work disk already exists: {dest}")
    if not dest.parent.is_dir():
        raise NotFound(f"directory for the work disk not found: {dest.parent}")
    seed_size = seed.stat().st_size
    if size_bytes < seed_size:
        raise InvalidArgument(
            f"work disk size {size_bytes // MIB} MiB is smaller than the image's work seed "
            f"({seed_size // MIB} MiB)",
            hint="work disks only grow: pick a larger size",
        )
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        sparse_copy(seed, tmp)
        # Published seeds are read-only (0444) and the copy keeps that mode,
        # which e2fsck/resize2fs (and the VMM) cannot open for writing.
        tmp.chmod(0o600)
        grow_work_disk(tmp, size_bytes)
        publish_file(tmp, dest)  # fsync, rename, fsync the directory
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class FileSyncItem:
    """A host file copied onto the work disk; ``guest_rel_path`` is relative to ``/root``."""

    guest_rel_path: str
    host_path: Path
    mode: int = 0o600


@dataclass(frozen=True)
class DirItem:
    guest_rel_path: str
    mode: int = 0o755


@dataclass(frozen=True)
class HostKey:
    """The per-VM sshd host key pair, as files on the host."""

    private: Path
    public: Path


@dataclass(frozen=True)
class Provisioning:
    """Everything written onto a work disk before boot (all root:root)."""

    authorized_keys: str
    host_key: HostKey
    dirs: tuple[DirItem, ...] = field(default_factory=tuple)
    files: tuple[FileSyncItem, ...] = field(default_factory=tuple)
    hushlogin: bool = True
    #: Of ``files``, the ones ``[[file_sync]]`` wrote, and the one the git identity
    #: was merged into: recorded on the disk (:mod:`banger.disk.synced`).
    synced: tuple[str, ...] = ()
    git_identity: str | None = None
    #: Files an earlier provisioning synced that nothing writes now: deleted first.
    stale: tuple[str, ...] = ()


def disk_path(guest_rel_path: str) -> str:
    """``.config/gh/hosts.yml`` → ``/.config/gh/hosts.yml`` (validated, no ``..``)."""
    rel = guest_rel_path.strip()
    if not rel or rel.startswith("/"):
        raise InvalidArgument(
            f"guest path {guest_rel_path!r} must be relative to /root",
            hint="write it as in the config, e.g. ~/.gitconfig → .gitconfig",
        )
    return image_path("/" + rel.rstrip("/"), "guest path")


def provisioning_edit(p: Provisioning, stage_dir: Path) -> Ext4Edit:
    """The one debugfs batch that provisions a work disk (pure apart from paths)."""
    edit = Ext4Edit()
    edit.ensure_root_dir_mode(0o755, 0, 0)
    edit.mkdir("/.ssh", 0o700)
    keys = p.authorized_keys if p.authorized_keys.endswith("\n") else p.authorized_keys + "\n"
    edit.write_bytes(AUTHORIZED_KEYS_PATH, keys.encode(), 0o600, stage_dir=stage_dir)
    edit.mkdir("/.banger", 0o700)
    edit.write_file(HOST_KEY_PATH, p.host_key.private, 0o600)
    edit.write_file(HOST_KEY_PATH + ".pub", p.host_key.public, 0o644)
    for stale in p.stale:
        edit.remove(stale)
    if p.hushlogin:
        edit.write_bytes("/.hushlogin", b"", 0o644, stage_dir=stage_dir)
    for d in p.dirs:
        edit.mkdir_p(disk_path(d.guest_rel_path), d.mode)
    for f in p.files:
        target = disk_path(f.guest_rel_path)
        parent = target.rsplit("/", 1)[0]
        if parent and not any(e.path == parent for e in edit.expectations):
            edit.mkdir_p(parent, 0o755)
        edit.write_file(target, f.host_path, f.mode)
    edit.write_bytes(SYNCED_RECORD_PATH, synced_record(p).to_bytes(), 0o600, stage_dir=stage_dir)
    return edit


def synced_record(p: Provisioning) -> SyncedRecord:
    """What this batch syncs, as recorded on the disk."""
    return SyncedRecord(
        files=tuple(disk_path(rel) for rel in p.synced),
        git_identity=disk_path(p.git_identity) if p.git_identity else None,
    )


def merged_authorized_keys(existing: bytes, key: str) -> str:
    """The work disk's ``authorized_keys`` after provisioning: every line it had
    (keys the user added in the guest stay), and banger's ``key`` once.

    A line already holding the key's base64 blob counts as banger's key (it may
    carry options or another comment), so restarts never add it twice.
    """
    lines = existing.decode("utf-8", "surrogateescape").splitlines()
    wanted = key.strip()
    fields = wanted.split()
    blob = fields[1] if len(fields) > 1 else wanted
    if not any(blob in line.split() for line in lines):
        lines.append(wanted)
    return "\n".join(lines) + "\n"


def _existing_authorized_keys(disk: Path) -> bytes:
    try:
        return ext4.read_file(disk, AUTHORIZED_KEYS_PATH)
    except NotFound:
        return b""


def provision_work_disk(disk: Path, p: Provisioning) -> None:
    """Write keys, host key, ``.hushlogin`` and synced files in one batch, then verify.

    Files synced by an earlier batch that this one no longer writes are
    deleted in the same batch, and the new record written
    (:mod:`banger.disk.synced`).

    ``authorized_keys`` is merged, not replaced: banger's key is ensured
    present and every other line on the disk is kept (:func:`merged_authorized_keys`).
    """
    if not disk.is_file():
        raise NotFound(f"work disk not found: {disk}")
    keys = merged_authorized_keys(_existing_authorized_keys(disk), p.authorized_keys)
    # a removed [[file_sync]] entry's files go: banger wrote them (banger.disk.synced)
    stale = stale_files(disk, read_synced_record(disk), synced_record(p))
    p = replace(p, authorized_keys=keys, stale=tuple(stale))
    for f in p.files:
        if not f.host_path.is_file():
            raise NotFound(f"file to sync not found: {f.host_path}")
    for key in (p.host_key.private, p.host_key.public):
        if not key.is_file():
            raise BangerError(f"host key file missing: {key}")
    with tempfile.TemporaryDirectory(prefix="banger-provision-") as stage:
        stage_dir = Path(stage)
        ext4.apply(disk, provisioning_edit(p, stage_dir), stage_dir=stage_dir)
