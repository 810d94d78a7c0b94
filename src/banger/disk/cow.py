"""Copy-on-write root disks: each VM's private, writable view of an image's rootfs.

Strategies, in the order :func:`choose_strategy` prefers them:

- :class:`Qcow2Overlay` — ``qemu-img create -f qcow2 -b base -F raw``: ~8 ms and
  a few hundred KiB whatever the image size; QEMU only (Firecracker takes raw).
- :class:`Reflink` — ``cp --reflink=always``: instant and shared on btrfs/XFS;
  refused by ext4 (probed with a real copy, never guessed from the fs name).
- :class:`DmSnapshot` — a device-mapper snapshot of the image on a read-only
  loop device over a per-VM sparse cow file; needs root, so the helper makes
  it (``requires_helper``: an instance bound to a helper call). Raw, so it
  serves Firecracker where the filesystem has no reflink.
- :class:`SparseCopy` — ``cp --sparse=always``: the last resort, and the only
  strategy whose cost grows with the image (with its data, not its size).

Every strategy has an undo (:meth:`CowStrategy.remove`), and names its disk by
the file ending :meth:`banger.paths.Paths.vm_root_disk` expects.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from banger import proc
from banger.disk.durable import publish_file
from banger.disk.workdisk import sparse_copy
from banger.errors import CommandError, Conflict, HelperError, InvalidArgument, NotFound

DiskFormat = Literal["raw", "qcow2"]
SECTOR = 512
DM_CONTROL = Path("/dev/mapper/control")


@dataclass(frozen=True)
class RootDisk:
    path: Path
    format: DiskFormat
    #: the strategy's name, stored with the VM so its undo can be found later
    strategy: str


class CowStrategy(Protocol):
    name: ClassVar[str]
    #: True when only the root helper can run it
    requires_helper: ClassVar[bool]

    def create(self, base: Path, vm_dir: Path) -> RootDisk: ...

    def remove(self, root_disk: RootDisk) -> None: ...


def _prepare(base: Path, dest: Path) -> Path:
    if not base.is_file():
        raise NotFound(f"image rootfs not found: {base}")
    if dest.exists():
        raise Conflict(f"root disk already exists: {dest}")
    return dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")


def _publish(tmp: Path, dest: Path) -> None:
    publish_file(tmp, dest)  # fsync, rename, fsync the directory


class _OneFileDisk:
    """A strategy whose disk is one file in the VM directory.

    The file is written under a temporary name and published (fsync, rename,
    fsync the directory) only when complete, so a crash never leaves a
    half-written root disk under the final name; removing it is unlinking it.
    """

    name: ClassVar[str]
    requires_helper: ClassVar[bool] = False
    #: the file's name in the VM directory, and what QEMU should read it as
    file_name: ClassVar[str]
    format: ClassVar[DiskFormat]

    def _fill(self, base: Path, tmp: Path) -> None:
        """Write the disk for ``base`` to ``tmp``."""
        raise NotImplementedError

    def create(self, base: Path, vm_dir: Path) -> RootDisk:
        dest = vm_dir / self.file_name
        tmp = _prepare(base, dest)
        try:
            self._fill(base, tmp)
            _publish(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return RootDisk(dest, self.format, self.name)

    def remove(self, root_disk: RootDisk) -> None:
        root_disk.path.unlink(missing_ok=True)


class Qcow2Overlay(_OneFileDisk):
    name: ClassVar[str] = "qcow2"
    file_name: ClassVar[str] = "root.qcow2"
    format: ClassVar[DiskFormat] = "qcow2"

    def _fill(self, base: Path, tmp: Path) -> None:
        # absolute backing path: a relative one resolves against the overlay's dir
        backing = str(base.resolve())
        proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", str(tmp)])


class Reflink(_OneFileDisk):
    name: ClassVar[str] = "reflink"
    file_name: ClassVar[str] = "root.ext4"
    format: ClassVar[DiskFormat] = "raw"

    def _fill(self, base: Path, tmp: Path) -> None:
        proc.run(["cp", "--reflink=always", "--", str(base), str(tmp)])


class SparseCopy(_OneFileDisk):
    name: ClassVar[str] = "copy"
    file_name: ClassVar[str] = "root.ext4"
    format: ClassVar[DiskFormat] = "raw"

    def _fill(self, base: Path, tmp: Path) -> None:
        sparse_copy(base, tmp)


# -- device-mapper snapshot (built here, run by the helper) -------------------

_DM_NAME = re.compile(r"^banger-[a-z0-9][a-z0-9-]{0,63}$")
_DEV = re.compile(r"^/dev/(loop[0-9]+|mapper/[A-Za-z0-9_.-]+|[0-9]+:[0-9]+)$|^[0-9]+:[0-9]+$")


def dm_name(vm_id: str) -> str:
    """The device-mapper name of a VM's root snapshot (``banger-<id>``)."""
    name = f"banger-{vm_id}"
    if not _DM_NAME.fullmatch(name):
        raise InvalidArgument(f"vm id {vm_id!r} cannot name a device-mapper device")
    return name


def snapshot_table(origin_dev: str, cow_dev: str, sectors: int, chunk_sectors: int = 8) -> str:
    """The one-line ``dmsetup`` table of a persistent snapshot.

    ``0 <sectors> snapshot <origin> <cow> P <chunk>``: the origin is the image
    rootfs on a read-only loop device, the cow device a per-VM sparse file on
    a loop device; writes land in the cow device, in chunks of ``chunk_sectors``
    (8 × 512 bytes = 4 KiB, the ext4 block size).
    """
    for what, dev in (("origin device", origin_dev), ("cow device", cow_dev)):
        if not _DEV.fullmatch(dev):
            raise InvalidArgument(f"{what} {dev!r} is not a loop, mapper or major:minor device")
    if sectors <= 0:
        raise InvalidArgument(f"snapshot size must be positive (got {sectors} sectors)")
    if chunk_sectors <= 0 or chunk_sectors & (chunk_sectors - 1):
        raise InvalidArgument(f"chunk size must be a power of two (got {chunk_sectors} sectors)")
    return f"0 {sectors} snapshot {origin_dev} {cow_dev} P {chunk_sectors}"


def sectors_of(base: Path) -> int:
    size = base.stat().st_size
    if size % SECTOR:
        raise InvalidArgument(f"{base} is {size} bytes, not a whole number of 512-byte sectors")
    return size // SECTOR


def dmsetup_create_argv(name: str, table: str) -> list[str]:
    if not _DM_NAME.fullmatch(name):
        raise InvalidArgument(f"device-mapper name {name!r} is not a banger device")
    return ["dmsetup", "create", name, "--table", table]


def dmsetup_remove_argv(name: str) -> list[str]:
    if not _DM_NAME.fullmatch(name):
        raise InvalidArgument(f"device-mapper name {name!r} is not a banger device")
    return ["dmsetup", "remove", "--retry", name]


def device_mapper_usable(control: Path = DM_CONTROL) -> bool:
    """Whether the kernel exposes device-mapper (``/dev/mapper/control``)."""
    try:
        return stat.S_ISCHR(control.stat().st_mode)
    except OSError:
        return False


#: ``helper.call(op, **args)``: how a strategy that needs root reaches banger-helper.
HelperCall = Callable[..., dict[str, Any]]
COW_FILE = "root.cow"


class DmSnapshot:
    """Device-mapper snapshot of the image rootfs over a per-VM sparse cow file.

    The owner makes ``<vm dir>/root.cow`` (sparse, as large as the image, so
    the exception store cannot overflow whatever the guest writes); the
    helper's ``dm_snapshot_create`` puts both on loop devices and makes
    ``/dev/mapper/banger-<vm id>`` (:mod:`banger.helper.dm_ops`). The snapshot
    is persistent: after a host reboot the same call over the same cow file
    brings the VM's writes back. Only an instance bound to a helper
    (:meth:`bound`) can create or remove one.
    """

    name: ClassVar[str] = "dm-snapshot"
    requires_helper: ClassVar[bool] = True

    def __init__(self, call: HelperCall | None = None) -> None:
        self._call = call

    def bound(self, call: HelperCall) -> DmSnapshot:
        return DmSnapshot(call)

    def _helper(self) -> HelperCall:
        if self._call is None:
            raise HelperError(
                "device-mapper snapshots are made by the root helper",
                hint="start banger-helper (banger system install, or sudo banger-helper)",
            )
        return self._call

    def create(self, base: Path, vm_dir: Path) -> RootDisk:
        call = self._helper()
        vm_id = vm_dir.name
        dm_name(vm_id)  # the VM directory is named by the id the device is named by
        if not base.is_file():
            raise NotFound(f"image rootfs not found: {base}")
        cow = vm_dir / COW_FILE
        if not cow.exists():  # kept across restarts: it holds the VM's writes
            tmp = vm_dir / f".{COW_FILE}.tmp-{secrets.token_hex(4)}"
            try:
                with open(tmp, "xb") as f:
                    os.truncate(f.fileno(), max(base.stat().st_size, 1 << 20))
                _publish(tmp, cow)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        result = call("dm_snapshot_create", vm_id=vm_id, origin=str(base), cow=str(cow))
        return RootDisk(Path(str(result["device"])), "raw", self.name)

    def remove(self, root_disk: RootDisk) -> None:
        vm_id = root_disk.path.name.removeprefix("banger-")
        dm_name(vm_id)
        self._helper()("dm_snapshot_remove", vm_id=vm_id)
        # The cow file goes with the VM directory.


# -- choice ---------------------------------------------------------------------

STRATEGIES: dict[str, CowStrategy] = {
    s.name: s for s in (Qcow2Overlay(), Reflink(), DmSnapshot(), SparseCopy())
}


def strategy_named(name: str) -> CowStrategy:
    """The strategy that made a disk (for its undo), from the name stored with the VM."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidArgument(f"unknown copy-on-write strategy {name!r}") from None


def reflink_supported(directory: Path) -> bool:
    """Probe with a real ``cp --reflink=always`` between two files in ``directory``."""
    token = secrets.token_hex(4)
    src = directory / f".reflink-probe-{token}"
    dst = directory / f".reflink-probe-{token}.copy"
    try:
        src.write_bytes(b"banger reflink probe\n" * 256)
        proc.run(["cp", "--reflink=always", "--", str(src), str(dst)])
        return True
    except CommandError:
        return False
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


def choose_strategy(
    vmm: str, state_dir: Path, dm_usable: bool, *, jailed: bool = False
) -> CowStrategy:
    """qcow2 under QEMU; else reflink if the state fs has it; else dm via the helper; else copy.

    A jailed Firecracker gets no dm snapshot: the jail hard-links the VM's disks
    from the state directory (a device node under /dev is not one of them).
    """
    if vmm not in ("qemu", "firecracker"):
        raise InvalidArgument(f"unknown vmm {vmm!r}", hint="use 'qemu' or 'firecracker'")
    if vmm == "qemu":
        return STRATEGIES[Qcow2Overlay.name]
    if reflink_supported(state_dir):
        return STRATEGIES[Reflink.name]
    if dm_usable and not jailed:
        return STRATEGIES[DmSnapshot.name]
    return STRATEGIES[SparseCopy.name]
