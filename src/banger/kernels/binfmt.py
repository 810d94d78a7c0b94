"""Recognising kernel images and static executables from their headers."""

from __future__ import annotations

import struct
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
PT_INTERP = 3
#: The x86 boot protocol's setup header: "HdrS" at 0x202, and at 0x20E the
#: offset (minus 0x200) of the NUL-terminated kernel version string.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
BZIMAGE_VERSION_PTR = 0x20E


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def is_elf(path: Path) -> bool:
    return _head(path, 4) == ELF_MAGIC


def is_bzimage(path: Path) -> bool:
    head = _head(path, BZIMAGE_MAGIC_OFFSET + 4)
    return head[BZIMAGE_MAGIC_OFFSET:] == BZIMAGE_MAGIC


def bzimage_version(path: Path) -> str | None:
    """The version string the kernel build put in the setup header, e.g. ``6.1.0-56-amd64``."""
    with open(path, "rb") as f:
        head = f.read(0x210)
        if len(head) < 0x210 or head[BZIMAGE_MAGIC_OFFSET : BZIMAGE_MAGIC_OFFSET + 4] != b"HdrS":
            return None
        (ptr,) = struct.unpack_from("<H", head, BZIMAGE_VERSION_PTR)
        if ptr == 0:
            return None
        f.seek(ptr + 0x200)
        raw = f.read(256).split(b"\0", 1)[0]
    text = raw.decode("ascii", "replace").split(" ", 1)[0]
    return text or None


def elf_is_static(path: Path) -> bool:
    """True when the ELF file has no program interpreter (``PT_INTERP``).

    A dynamically linked busybox would find no loader or libc in the initramfs.
    """
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != ELF_MAGIC or len(ident) < 52:
            raise ValueError(f"{path} is not an ELF file")
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            phoff, phentsize, phnum = (
                struct.unpack_from(endian + "Q", ident, 0x20)[0],
                *struct.unpack_from(endian + "HH", ident, 0x36),
            )
        else:
            phoff, phentsize, phnum = (
                struct.unpack_from(endian + "I", ident, 0x1C)[0],
                *struct.unpack_from(endian + "HH", ident, 0x2A),
            )
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == PT_INTERP:
            return False
    return True
