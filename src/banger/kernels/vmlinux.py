"""bzImage → vmlinux: the uncompressed ELF kernel Firecracker boots.

A bzImage is a real-mode setup part followed by a small decompressor whose
payload is the compressed ``vmlinux`` ELF. The x86 boot protocol (≥ 2.08)
says where that payload is: ``payload_offset`` (0x248) and ``payload_length``
(0x24c), relative to the start of the protected-mode code, which begins after
``setup_sects`` (0x1f1; 0 means 4) 512-byte sectors plus the boot sector. The
payload's format is recognised by its magic bytes; the kernel build appends
the uncompressed size (4 bytes) after xz/lzma/zstd/lz4 streams, so decoders stop
at the end of their stream and ignore what follows.

The result must be an x86-64 ELF (``\\x7fELF``, class 64, little-endian,
machine 0x3E) whose ``Linux version`` string names the same release as the
bzImage's setup header.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from banger.errors import BangerError

#: A decompressed kernel above this is refused (a decompression bomb, not a kernel).
MAX_VMLINUX = 1 << 30
_HDRS = b"HdrS"
_EM_X86_64 = 0x3E
_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_LINUX_VERSION = re.compile(rb"Linux version (\S+)")


class VmlinuxError(BangerError):
    """The kernel image cannot be turned into, or is not, a usable vmlinux."""

    http_status = 400
    exit_code = 2


@dataclass(frozen=True)
class SetupHeader:
    protocol: tuple[int, int]
    setup_sects: int
    payload_offset: int
    payload_length: int
    #: Preferred physical load address (0x258, protocol ≥ 2.10), or None.
    pref_address: int | None
    version: str | None

    @property
    def payload_start(self) -> int:
        return (self.setup_sects + 1) * 512 + self.payload_offset


@dataclass(frozen=True)
class VmlinuxInfo:
    entry: int
    version: str | None
    compression: str | None
    size: int
    #: Carries a PVH entry note, so QEMU (and Firecracker's PVH path) can boot the ELF directly.
    pvh: bool


def parse_setup_header(data: bytes) -> SetupHeader:
    if len(data) < 0x270 or data[0x202:0x206] != _HDRS:
        raise VmlinuxError("kernel: not a bzImage (no 'HdrS' setup header at 0x202)")
    (raw,) = struct.unpack_from("<H", data, 0x206)
    protocol = (raw >> 8, raw & 0xFF)
    if protocol < (2, 8):
        raise VmlinuxError(
            f"kernel: boot protocol {protocol[0]}.{protocol[1]:02d} is older than 2.08; "
            "the payload cannot be located"
        )
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    pref = struct.unpack_from("<Q", data, 0x258)[0] if protocol >= (2, 10) else None
    version = None
    (ptr,) = struct.unpack_from("<H", data, 0x20E)
    if ptr:
        raw_version = data[0x200 + ptr : 0x200 + ptr + 256].split(b"\0", 1)[0]
        version = raw_version.decode("ascii", "replace").split(" ", 1)[0] or None
    return SetupHeader(protocol, setup_sects, payload_offset, payload_length, pref, version)


def detect_compression(payload: bytes) -> str:
    if payload[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if payload[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if payload[:4] == b"\x02\x21\x4c\x18":
        return "lz4"
    if payload[:3] == b"BZh":
        return "bzip2"
    if payload[:3] == b"\x5d\x00\x00":
        return "lzma"
    if payload[:4] == b"\x89LZO":
        return "lzo"
    if payload[:4] == b"\x7fELF":
        return "none"
    raise VmlinuxError(f"kernel: unknown payload compression (magic {payload[:6].hex()})")


def _lz4_legacy(payload: bytes) -> bytes:
    try:
        import lz4.block  # type: ignore[import-not-found]
    except ImportError:
        raise VmlinuxError(
            "kernel: the payload is lz4-compressed, which this banger cannot decompress",
            hint="install the python 'lz4' package, or import a vmlinux built by the kernel",
        ) from None
    # Legacy frame: magic, then blocks of <le32 compressed size><block>, each ≤ 8 MiB out.
    out, pos = bytearray(), 4
    while pos + 4 <= len(payload) and len(out) <= MAX_VMLINUX:
        (size,) = struct.unpack_from("<I", payload, pos)
        if size == 0x184C2102 or pos + 4 + size > len(payload):
            break  # the next frame's magic, or the appended size: end of the stream
        out += lz4.block.decompress(payload[pos + 4 : pos + 4 + size], uncompressed_size=8 << 20)
        pos += 4 + size
    return bytes(out)


def decompress(payload: bytes, kind: str) -> bytes:
    """The payload decompressed, stopping at the end of its stream."""
    try:
        if kind == "none":
            return payload
        if kind == "gzip":
            return zlib.decompressobj(wbits=31).decompress(payload, MAX_VMLINUX + 1)
        if kind in ("xz", "lzma"):
            fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            return lzma.LZMADecompressor(fmt).decompress(payload, MAX_VMLINUX + 1)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(payload, MAX_VMLINUX + 1)
        if kind == "zstd":
            import zstandard

            # The kernel compresses with a large window (up to 2^31).
            dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
            with dctx.stream_reader(payload, read_across_frames=False) as reader:
                return reader.read(MAX_VMLINUX + 1)
        if kind == "lz4":
            return _lz4_legacy(payload)
    except (zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        raise VmlinuxError(f"kernel: the {kind} payload does not decompress: {exc}") from None
    raise VmlinuxError(
        f"kernel: {kind}-compressed kernels are not supported",
        hint="import a vmlinux, or a bzImage compressed with gzip, xz, lzma, zstd or bzip2",
    )


def inspect_elf(data: bytes) -> VmlinuxInfo:
    """Check ``data`` is an x86-64 little-endian ELF; its entry point and version string."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise VmlinuxError("vmlinux: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise VmlinuxError("vmlinux: not a 64-bit little-endian ELF")
    (machine,) = struct.unpack_from("<H", data, 18)
    if machine != _EM_X86_64:
        raise VmlinuxError(f"vmlinux: built for machine {machine:#x}, not x86-64 (0x3e)")
    (entry,) = struct.unpack_from("<Q", data, 24)
    match = _LINUX_VERSION.search(data)
    version = match.group(1).decode("ascii", "replace") if match else None
    return VmlinuxInfo(entry, version, None, len(data), _has_pvh_note(data))


def _pvh_in_notes(notes: bytes) -> bool:
    """Whether a PT_NOTE segment's bytes hold the Xen ``PHYS32_ENTRY`` note (type 18)."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        # Name and descriptor are each padded to 4 bytes (ELF64 notes as Linux writes them).
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _note_segments(header: bytes, read: Callable[[int, int], bytes]) -> Iterator[bytes]:
    """The PT_NOTE segments of the ELF64 whose first 64 bytes are ``header``."""
    (phoff,) = struct.unpack_from("<Q", header, 32)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    if phentsize < 56:
        return
    table = read(phoff, phentsize * phnum)
    for i in range(len(table) // phentsize):
        p_type, _flags, offset = struct.unpack_from("<IIQ", table, i * phentsize)
        (filesz,) = struct.unpack_from("<Q", table, i * phentsize + 32)
        if p_type == _PT_NOTE:
            # A kernel's notes are a few hundred bytes; a huge one is not a kernel's.
            yield read(offset, min(filesz, 1 << 20))


def _has_pvh_note(data: bytes) -> bool:
    return any(
        _pvh_in_notes(notes)
        for notes in _note_segments(data[:64], lambda off, size: data[off : off + size])
    )


def has_pvh_note(path: Path) -> bool:
    """Whether the ELF kernel at ``path`` carries a PVH entry note (``CONFIG_PVH``).

    QEMU boots such a ``vmlinux`` directly (``-kernel``) through that entry. Only
    the ELF and program headers and the note segments are read, not the tens of
    megabytes of kernel: this runs on every VM start. Anything that is not a
    readable x86-64 ELF answers False.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4:6] != b"\x02\x01":
                return False
            if struct.unpack_from("<H", header, 18)[0] != _EM_X86_64:
                return False

            def read(offset: int, size: int) -> bytes:
                f.seek(offset)
                return f.read(size)

            return any(_pvh_in_notes(notes) for notes in _note_segments(header, read))
    except (OSError, struct.error):
        return False


def extract_vmlinux(bzimage: Path, dest: Path) -> VmlinuxInfo:
    """Write the ELF kernel inside ``bzimage`` to ``dest`` (atomically) and describe it."""
    data = bzimage.read_bytes()
    header = parse_setup_header(data)
    start, end = header.payload_start, header.payload_start + header.payload_length
    if header.payload_length == 0 or end > len(data):
        raise VmlinuxError(
            f"kernel: {bzimage}: payload {start}+{header.payload_length} is outside the file"
        )
    payload = data[start:end]
    kind = detect_compression(payload)
    elf = decompress(payload, kind)
    if len(elf) > MAX_VMLINUX:
        raise VmlinuxError(f"kernel: {bzimage} decompresses to more than {MAX_VMLINUX >> 20} MiB")
    info = inspect_elf(elf)
    if header.version and info.version and info.version != header.version:
        raise VmlinuxError(
            f"kernel: the payload says Linux {info.version}, the bzImage header {header.version}"
        )
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(elf)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(dest)
    return VmlinuxInfo(info.entry, info.version, kind, info.size, info.pvh)


def kernel_capabilities(kernel_dir: Path) -> dict[str, tuple[bool, str]]:
    """Which VMMs can boot the kernel entry in ``kernel_dir``, and why (not)."""
    vmlinux, vmlinuz = kernel_dir / "vmlinux", kernel_dir / "vmlinuz"
    has_initrd = (kernel_dir / "initrd.img").is_file()
    elf: VmlinuxInfo | None = None
    elf_problem = "no vmlinux in the entry"
    if vmlinux.is_file():
        try:
            elf = inspect_elf(vmlinux.read_bytes())
        except VmlinuxError as exc:
            elf_problem = exc.message
    if elf is None:
        fc = (False, f"firecracker needs an uncompressed x86-64 vmlinux: {elf_problem}")
    elif has_initrd:
        fc = (
            True,
            "vmlinux + initramfs (initrd_path): virtio drivers built as modules load from it",
        )
    else:
        fc = (
            True,
            "vmlinux without an initramfs: virtio_mmio, virtio_blk and virtio_net must be "
            "built into the kernel (=y)",
        )
    initramfs = " + initramfs" if has_initrd else ""
    if vmlinuz.is_file() and elf is not None and elf.pvh:
        qemu = (True, f"vmlinux through its PVH entry{initramfs} (no decompression in the guest)")
    elif vmlinuz.is_file():
        qemu = (True, f"bzImage{initramfs} (no vmlinux with a PVH entry note)")
    elif elf is not None and elf.pvh:
        qemu = (True, "ELF vmlinux with a PVH entry note")
    elif elf is not None:
        qemu = (False, "qemu cannot boot an ELF vmlinux without a PVH entry note (CONFIG_PVH)")
    else:
        qemu = (False, "no kernel image in the entry")
    return {"firecracker": fc, "qemu": qemu}


def qemu_pvh_image(kernel_dir: Path) -> Path | None:
    """The ``vmlinux`` QEMU boots instead of the entry's bzImage, or None to boot the bzImage.

    Given the uncompressed ELF of the same kernel, QEMU's ``microvm`` machine
    jumps to its PVH entry: the guest skips decompressing ``vmlinuz``, seconds
    under emulation (3.5 s → 0.3 s to the first kernel line, measured). Only a
    ``vmlinux`` that carries the PVH note qualifies; without one QEMU would
    refuse it, so the bzImage stays the way. An entry that is a bare ``vmlinux``
    has no choice to make: it is the kernel and booted as such.
    """
    vmlinux = kernel_dir / "vmlinux"
    if not (kernel_dir / "vmlinuz").is_file():
        return None
    return vmlinux if has_pvh_note(vmlinux) else None
