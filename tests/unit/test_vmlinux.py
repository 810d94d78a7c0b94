"""bzImage → vmlinux extraction, on the suite's real Debian kernel and on built images."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from banger.kernels.binfmt import bzimage_version
from banger.kernels.vmlinux import (
    VmlinuxError,
    extract_vmlinux,
    has_pvh_note,
    inspect_elf,
    kernel_capabilities,
    parse_setup_header,
    qemu_pvh_image,
)
from tests.elf_support import elf_with_notes, fake_bzimage, fake_elf, note
from tests.kernel_cache import cached_debian_kernel


def test_real_debian_kernel_extracts_to_a_matching_x86_64_elf(tmp_path: Path) -> None:
    kernel_dir = cached_debian_kernel()
    bzimage = kernel_dir / "vmlinuz"
    info = extract_vmlinux(bzimage, tmp_path / "vmlinux")
    elf = (tmp_path / "vmlinux").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and struct.unpack_from("<H", elf, 18)[0] == 0x3E
    # The version string in the bzImage's setup header (0x200 + the pointer at 0x20e).
    data = bzimage.read_bytes()
    (ptr,) = struct.unpack_from("<H", data, 0x20E)
    header_version = data[0x200 + ptr :].split(b"\0", 1)[0].decode().split(" ", 1)[0]
    assert header_version == bzimage_version(bzimage)
    assert info.version == header_version
    assert f"Linux version {header_version} ".encode() in elf
    # The ELF entry is where the boot protocol says the kernel wants to be loaded.
    header = parse_setup_header(data)
    assert header.pref_address is not None
    assert info.entry == header.pref_address == struct.unpack_from("<Q", elf, 24)[0]
    assert info.compression in {"gzip", "xz", "lzma", "zstd", "lz4", "bzip2"}
    assert not (tmp_path / ".vmlinux.tmp").exists()
    (tmp_path / "vmlinuz").symlink_to(bzimage)
    caps = kernel_capabilities(tmp_path)
    assert caps["qemu"] == (True, "vmlinux through its PVH entry (no decompression in the guest)")
    (tmp_path / "vmlinux").unlink()
    caps = kernel_capabilities(tmp_path)
    assert caps["qemu"] == (True, "bzImage (no vmlinux with a PVH entry note)")
    assert caps["firecracker"] == (
        False,
        "firecracker needs an uncompressed x86-64 vmlinux: no vmlinux in the entry",
    )
    (tmp_path / "vmlinux").write_bytes(elf)
    (tmp_path / "initrd.img").write_bytes(b"x")
    ok, reason = kernel_capabilities(tmp_path)["firecracker"]
    assert ok and "initrd_path" in reason


# -- built images: every compression, and the ways it goes wrong -------------------------


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_each_compression_is_detected_and_decompressed(tmp_path: Path, kind: str) -> None:
    elf = fake_elf()
    src = tmp_path / "bz"
    src.write_bytes(fake_bzimage(COMPRESSORS[kind](elf)))
    info = extract_vmlinux(src, tmp_path / "vmlinux")
    assert (info.compression, info.version, info.entry) == (kind, "6.9.9-test", 0x1000000)
    assert (tmp_path / "vmlinux").read_bytes() == elf


def test_lz4_without_the_module_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "bz"
    src.write_bytes(fake_bzimage(b"\x02\x21\x4c\x18" + b"\0" * 32))
    try:
        import lz4  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(VmlinuxError, match="lz4"):
            extract_vmlinux(src, tmp_path / "vmlinux")
    else:
        pytest.skip("the lz4 module is installed here")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (gzip.compress(fake_elf(machine=0xB7)), "not x86-64"),
        (gzip.compress(b"just some bytes, not an ELF at all" * 4), "not an ELF"),
        (gzip.compress(fake_elf(version="5.0.0-other")), "header 6.9.9-test"),
        (b"\x00\x11\x22\x33\x44\x55" * 8, "unknown payload compression"),
        (b"\x1f\x8b\x08" + b"\xff" * 40, "does not decompress"),
        (b"\x89LZO" + b"\0" * 40, "lzo-compressed kernels are not supported"),
    ],
)
def test_bad_payloads_are_refused(tmp_path: Path, payload: bytes, message: str) -> None:
    src = tmp_path / "bz"
    src.write_bytes(fake_bzimage(payload))
    with pytest.raises(VmlinuxError, match=message):
        extract_vmlinux(src, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_old_boot_protocol_and_non_bzimage_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VmlinuxError, match=r"older than 2\.08"):
        parse_setup_header(fake_bzimage(gzip.compress(fake_elf()), protocol=0x0206))
    with pytest.raises(VmlinuxError, match="not a bzImage"):
        parse_setup_header(fake_elf() + b"\0" * 1024)
    with pytest.raises(VmlinuxError, match="not an ELF"):
        inspect_elf(b"short")


def test_capabilities_of_a_bare_vmlinux(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(fake_elf())
    caps = kernel_capabilities(tmp_path)
    assert caps["firecracker"][0] and "built into the kernel" in caps["firecracker"][1]
    assert caps["qemu"] == (
        False,
        "qemu cannot boot an ELF vmlinux without a PVH entry note (CONFIG_PVH)",
    )


# -- the PVH note: what lets QEMU boot the vmlinux directly ------------------------------


def test_the_debian_vmlinux_has_the_pvh_note_and_qemu_boots_it(tmp_path: Path) -> None:
    """The suite's real kernel (CONFIG_PVH=y in Debian's config): the file reader finds the
    note reading only headers, agrees with the in-memory one, and the entry picks it."""
    kernel_dir = cached_debian_kernel()
    vmlinux = kernel_dir / "vmlinux"
    assert has_pvh_note(vmlinux)
    assert inspect_elf(vmlinux.read_bytes()).pvh
    assert qemu_pvh_image(kernel_dir) == vmlinux
    # Without a bzImage beside it, the vmlinux is the kernel itself: no choice to make.
    (tmp_path / "vmlinux").symlink_to(vmlinux)
    assert qemu_pvh_image(tmp_path) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Linux's own notes first (as in a real vmlinux), then Xen's PHYS32_ENTRY.
        (elf_with_notes(note(b"GNU", 3, b"\1" * 20) + note(b"Xen", 18, b"\0" * 4)), True),
        # Xen notes of other types (Linux emits several) are not the PVH entry.
        (elf_with_notes(note(b"Xen", 6, b"linux\0\0\0") + note(b"Xen", 17, b"\0" * 8)), False),
        # Type 18 under another owner's name is not Xen's.
        (elf_with_notes(note(b"Linux", 18, b"\0" * 4)), False),
        # A PVH-looking note outside any PT_NOTE segment does not count.
        (elf_with_notes(note(b"Xen", 18, b"\0" * 4), note_type=1), False),
        # No program headers at all (the fake ELF without a PVH kernel's notes).
        (fake_elf(), False),
        # Truncated program header table, and things that are not x86-64 ELFs.
        (elf_with_notes(b"")[:80], False),
        (fake_elf(machine=0xB7), False),
        (b"MZ not an elf at all", False),
    ],
)
def test_pvh_note_parser_on_built_elfs(tmp_path: Path, data: bytes, expected: bool) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    assert has_pvh_note(path) is expected
    (tmp_path / "vmlinuz").write_bytes(b"bz")
    assert qemu_pvh_image(tmp_path) == (path if expected else None)


def test_pvh_note_of_a_missing_file_is_false(tmp_path: Path) -> None:
    assert not has_pvh_note(tmp_path / "absent")
