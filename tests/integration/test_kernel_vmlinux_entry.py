"""Kernel entries carry a ``vmlinux`` for Firecracker, extracted at import/pull time.

On the real Debian kernel the test suite boots: ``kernel import`` of its
bzImage publishes ``vmlinux`` next to ``vmlinuz`` with its sha256 in
kernel.json, the ELF's ``Linux version`` matches the bzImage header, and
``kernel show`` reports both VMMs able to boot the entry. A bzImage banger
cannot unpack is still published (QEMU boots it) and ``kernel show`` says why
Firecracker cannot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banger.daemon.kernels_svc import kernel_capability_list, pvh_boot
from banger.kernels.binfmt import bzimage_version
from banger.kernels.pull import import_kernel
from banger.kernels.store import VMLINUX_NAME, read_kernel, sha256_file, verify_kernel
from banger.kernels.vmlinux import inspect_elf
from banger.paths import Paths
from tests.kernel_cache import cached_debian_kernel


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "cfg", tmp_path / "state", tmp_path / "cache", tmp_path / "run")


def test_import_of_the_debian_kernel_publishes_a_matching_vmlinux(paths: Paths) -> None:
    source = cached_debian_kernel()
    entry = import_kernel(source / "vmlinuz", paths=paths, initrd=source / "initrd.img", name="deb")
    vmlinux = entry.vmlinux_path
    assert vmlinux == entry.path / VMLINUX_NAME and vmlinux.is_file()
    data = json.loads((entry.path / "kernel.json").read_text())
    assert data["sha256"][VMLINUX_NAME] == sha256_file(vmlinux)
    assert data["vmlinux"]["compression"] in ("gzip", "xz", "lzma", "zstd", "bzip2", "lz4")
    info = inspect_elf(vmlinux.read_bytes())
    assert info.version == bzimage_version(source / "vmlinuz")
    assert data["vmlinux"]["entry"] == f"{info.entry:#x}"
    verify_kernel(read_kernel(entry.path))  # the new file is covered by the hash check

    caps = {c.vmm: c for c in kernel_capability_list(read_kernel(entry.path))}
    assert caps["firecracker"].ok and "initramfs" in caps["firecracker"].reason
    assert caps["qemu"].ok
    assert (
        caps["qemu"].reason
        == "vmlinux through its PVH entry + initramfs (no decompression in the guest)"
    )
    assert pvh_boot(read_kernel(entry.path))


def test_an_unpackable_bzimage_is_published_for_qemu_with_the_reason(
    paths: Paths, tmp_path: Path
) -> None:
    data = bytearray(0x1000)  # a setup header with no payload: nothing to extract
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x800 - 0x200).to_bytes(2, "little")
    data[0x800:0x80D] = b"9.9.9-test\0\0\0"
    bz = tmp_path / "bz"
    bz.write_bytes(bytes(data))
    entry = import_kernel(bz, paths=paths)
    assert entry.vmlinux_path is None
    assert not (entry.path / VMLINUX_NAME).exists()
    assert isinstance(entry.meta.get("vmlinux_error"), str)
    caps = {c.vmm: c for c in kernel_capability_list(entry)}
    assert caps["qemu"].ok and caps["qemu"].reason == "bzImage (no vmlinux with a PVH entry note)"
    assert not pvh_boot(entry)
    assert not caps["firecracker"].ok
    assert "extraction failed" in caps["firecracker"].reason
