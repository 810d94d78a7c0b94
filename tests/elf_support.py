"""Hand-built kernel files: a bzImage around any payload, ELF64 images with chosen notes.

Shared by the vmlinux extraction tests and the PVH boot choice tests. Each
builder writes only the fields banger's parsers read, so a test decides every
byte that matters (the boot protocol, the version string, the PT_NOTE entries).
"""

from __future__ import annotations

import struct


def fake_elf(machine: int = 0x3E, version: str = "6.9.9-test", entry: int = 0x1000000) -> bytes:
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4], head[5] = 2, 1
    struct.pack_into("<H", head, 18, machine)
    struct.pack_into("<Q", head, 24, entry)
    return bytes(head) + b"\0" * 100 + f"Linux version {version} (gcc) #1 SMP\n".encode()


def fake_bzimage(payload: bytes, *, version: str = "6.9.9-test", protocol: int = 0x020F) -> bytes:
    setup_sects = 1
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, protocol)
    struct.pack_into("<H", image, 0x20E, 0x300 - 0x200)
    image[0x300 : 0x300 + len(version) + 1] = version.encode() + b"\0"
    struct.pack_into("<Q", image, 0x258, 0x1000000)
    decompressor = b"\x90" * 64
    struct.pack_into("<II", image, 0x248, len(decompressor), len(payload))
    # The build appends the uncompressed size after the stream; decoders must ignore it.
    return bytes(image) + decompressor + payload + struct.pack("<I", 12345)


def elf_with_notes(notes: bytes, *, note_type: int = 4) -> bytes:
    """An x86-64 ELF64 with one program header (PT_NOTE unless told) covering ``notes``."""
    head = bytearray(fake_elf())
    struct.pack_into("<Q", head, 32, 64)  # e_phoff
    struct.pack_into("<HH", head, 54, 56, 1)  # e_phentsize, e_phnum
    body = bytes(head[:64])
    phdr = bytearray(56)
    offset = 64 + 56
    struct.pack_into("<IIQ", phdr, 0, note_type, 4, offset)
    struct.pack_into("<QQ", phdr, 32, len(notes), len(notes))
    return body + bytes(phdr) + notes


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    return struct.pack("<III", len(name), len(desc), ntype) + _pad4(name) + _pad4(desc)


def _pad4(field: bytes) -> bytes:
    return field + b"\0" * (-len(field) % 4)
