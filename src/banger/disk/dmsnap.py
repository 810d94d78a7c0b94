"""Device-mapper snapshots of raw root disks: the pure half (structs, tables, argv, parsers).

A Firecracker VM needs a raw root disk. Where the state filesystem has no
reflink, a device-mapper snapshot gives each VM a private writable view of
the image's rootfs in constant time, as the seed did:

- the image's ``rootfs.ext4`` on a **read-only** loop device (the origin);
- the VM's sparse ``root.cow`` file on a **read-write** loop device (the
  exception store: only the chunks the guest writes);
- ``dmsetup create banger-<vm id>`` with the table
  ``0 <sectors> snapshot <origin> <cow> P 8`` (persistent, 4 KiB chunks),
  whose node the helper gives to the owner, who hands it to Firecracker.

Loop devices are attached with ``LOOP_CONFIGURE`` on a descriptor the helper
opened itself (``O_NOFOLLOW``, checked regular and the owner's), never by
path through ``losetup``, and with ``LO_FLAGS_AUTOCLEAR``: once the snapshot
is removed (or was never made) the last close detaches them, so every
failure path undoes itself. The root half is :mod:`banger.helper.dm_ops`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument

SECTOR = 512
#: Exception-store chunk: 8 sectors = 4 KiB, the ext4 block size.
CHUNK_SECTORS = 8
DM_PREFIX = "banger-"
_VM_ID = re.compile(r"[0-9a-f]{12}")
_DM_NAME = re.compile(rf"{DM_PREFIX}[0-9a-f]{{12}}")
_LOOP = re.compile(r"/dev/loop[0-9]+")

# <linux/loop.h>
LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8: attach and configure in one step
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
_LO_NAME_SIZE = 64
#: struct loop_info64: 5 u64, 4 u32, file name[64], crypt name[64], key[32], 2 u64.
_LOOP_INFO64 = struct.Struct(f"=5Q4I{_LO_NAME_SIZE}s{_LO_NAME_SIZE}s32s2Q")
#: struct loop_config: u32 fd, u32 block_size, loop_info64, u64 reserved[8].
_LOOP_CONFIG = struct.Struct(f"=2I{_LOOP_INFO64.size}s64x")


def check_vm_id(vm_id: str) -> str:
    if not _VM_ID.fullmatch(vm_id):
        raise InvalidArgument(f"vm id {vm_id!r} is not 12 hex digits")
    return vm_id


def dm_name(vm_id: str) -> str:
    """The device-mapper name of a VM's root snapshot (``banger-<vm id>``)."""
    return DM_PREFIX + check_vm_id(vm_id)


def loop_config(fd: int, *, read_only: bool, file_name: str) -> bytes:
    """The ``struct loop_config`` for ``LOOP_CONFIGURE`` of backing file ``fd``."""
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    name = file_name.encode()[: _LO_NAME_SIZE - 1]
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)
    return _LOOP_CONFIG.pack(fd, 0, info)


def loop_config_flags(config: bytes) -> tuple[int, int]:
    """(fd, lo_flags) of a packed ``struct loop_config`` (for tests and logs)."""
    fd, _block, info = _LOOP_CONFIG.unpack(config)
    return fd, _LOOP_INFO64.unpack(info)[8]


def snapshot_table(origin: str, cow: str, sectors: int, chunk_sectors: int = CHUNK_SECTORS) -> str:
    """``0 <sectors> snapshot <origin> <cow> P <chunk>``: a persistent snapshot table."""
    for what, dev in (("origin", origin), ("cow", cow)):
        if not _LOOP.fullmatch(dev):
            raise InvalidArgument(f"snapshot {what} {dev!r} is not a loop device")
    if sectors <= 0:
        raise InvalidArgument(f"snapshot size must be positive (got {sectors} sectors)")
    if chunk_sectors <= 0 or chunk_sectors & (chunk_sectors - 1):
        raise InvalidArgument(f"chunk size must be a power of two (got {chunk_sectors} sectors)")
    return f"0 {sectors} snapshot {origin} {cow} P {chunk_sectors}"


def sectors_for(size: int, what: str) -> int:
    if size <= 0 or size % SECTOR:
        raise InvalidArgument(f"{what} is {size} bytes, not a whole number of 512-byte sectors")
    return size // SECTOR


def _check_name(name: str) -> str:
    if not _DM_NAME.fullmatch(name):
        raise InvalidArgument(f"device-mapper name {name!r} is not a banger snapshot")
    return name


def dmsetup_create_argv(name: str, table: str) -> list[str]:
    return ["dmsetup", "create", _check_name(name), "--table", table]


def dmsetup_remove_argv(name: str) -> list[str]:
    return ["dmsetup", "remove", "--retry", _check_name(name)]


#: ``dmsetup ls --target snapshot``, one device a line: what reconciliation reads.
DMSETUP_LS_ARGV = ["dmsetup", "ls", "--target", "snapshot"]


@dataclass(frozen=True)
class DmDevice:
    name: str
    major: int
    minor: int

    @property
    def vm_id(self) -> str:
        return self.name.removeprefix(DM_PREFIX)


def parse_dmsetup_ls(output: str) -> list[DmDevice]:
    """banger's snapshots in ``dmsetup ls`` output (``name\\t(major, minor)`` or
    ``(major:minor)``); other devices and "No devices found" are ignored."""
    found = []
    for line in output.splitlines():
        m = re.fullmatch(r"(\S+)\s+\((\d+)[:,]\s*(\d+)\)\s*", line)
        if m and _DM_NAME.fullmatch(m.group(1)):
            found.append(DmDevice(m.group(1), int(m.group(2)), int(m.group(3))))
    return found


def stale_snapshots(devices: list[DmDevice], live_vm_ids: set[str]) -> list[DmDevice]:
    """Snapshots whose VM is not running (or no longer exists): reconciliation removes them."""
    return [d for d in devices if d.vm_id not in live_vm_ids]


def snapshot_names(sys_block: Path = Path("/sys/block")) -> list[str]:
    """banger's snapshot devices, from sysfs (world-readable: the owner's bangerd can
    look without root; ``dmsetup ls`` needs ``/dev/mapper/control``)."""
    names = []
    for name_file in sorted(sys_block.glob("dm-*/dm/name")):
        try:
            name = name_file.read_text().strip()
        except OSError:
            continue
        if _DM_NAME.fullmatch(name):
            names.append(name)
    return names


def node_owner(name: str, mapper: Path = Path("/dev/mapper")) -> int | None:
    """The uid owning a snapshot's device node (dmsetup's node or udev's link target)."""
    try:
        return (mapper / _check_name(name)).stat().st_uid
    except OSError:
        return None
