"""A writer for the "newc" cpio format, the one the Linux initramfs unpacker reads.

Written here rather than by running ``cpio`` so the archive needs no root (device
nodes, uid 0) and is byte-for-byte reproducible: fixed inode numbers, owner 0:0,
one fixed mtime. Format (``Documentation/driver-api/early-userspace/buffer-format.rst``):
each entry is a 110-byte ASCII header ("070701" then 13 eight-digit hex fields),
the NUL-terminated name padded to a multiple of 4, then the data padded to a
multiple of 4; the archive ends with an entry named ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``name`` is relative (``bin/busybox``), never absolute."""

    name: str
    mode: int  # file type bits included, e.g. stat.S_IFREG | 0o755
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> CpioEntry:
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> CpioEntry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
        return cls(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(size: int) -> bytes:
    return b"\0" * (-size % 4)


def _member(ino: int, entry: CpioEntry, mtime: int) -> bytes:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        mtime,
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check (only used by the "070702" crc variant)
    )
    header = MAGIC + b"".join(b"%08X" % f for f in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "" in parts or name == TRAILER:
        raise ValueError(f"bad cpio member name: {name!r}")


def write_newc(entries: Iterable[CpioEntry], *, mtime: int = 0) -> bytes:
    """The whole archive. Parent directories must come before their contents."""
    out = bytearray()
    seen: set[str] = set()
    ino = 0
    for ino, entry in enumerate(entries, start=1):
        _check_name(entry.name)
        if entry.name in seen:
            raise ValueError(f"duplicate cpio member: {entry.name!r}")
        seen.add(entry.name)
        out += _member(ino, entry, mtime)
    out += _member(ino + 1, CpioEntry(TRAILER, 0), 0)
    return bytes(out)
