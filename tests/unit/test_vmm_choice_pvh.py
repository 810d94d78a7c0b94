"""Which kernel file a QEMU boot of a kernel entry uses: PVH vmlinux or bzImage.

Entries are published for real (``import_kernel`` extracts the vmlinux from a
built bzImage), with and without the PVH note. A cold boot takes the vmlinux
when it has the note; a restore takes what its snapshot recorded, and a
snapshot from before PVH boots (no record) keeps the bzImage.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from banger.daemon.vms.vmm_choice import PVH_BOOT_KEY, driver_files, qemu_pvh_kernel
from banger.errors import InvalidArgument
from banger.kernels.pull import import_kernel
from banger.kernels.store import KernelEntry
from banger.paths import Paths
from banger.vmm.firecracker import FirecrackerDriver
from banger.vmm.qemu import QemuDriver
from tests.elf_support import elf_with_notes, fake_bzimage, note
from tests.qemu_support import SPEC


def entry(tmp_path: Path, pvh: bool) -> KernelEntry:
    tmp_path.mkdir(exist_ok=True)
    paths = Paths(tmp_path / "cfg", tmp_path / "state", tmp_path / "cache", tmp_path / "run")
    ntype = 18 if pvh else 17
    elf = elf_with_notes(note(b"Xen", ntype, b"\0" * 8)) + b"Linux version 6.9.9-test (gcc)\n"
    bz = tmp_path / "bz"
    bz.write_bytes(fake_bzimage(gzip.compress(elf)))
    return import_kernel(bz, paths=paths, name="k")


def test_cold_boot_takes_the_pvh_vmlinux_when_it_has_the_note(tmp_path: Path) -> None:
    with_note = entry(tmp_path / "a", pvh=True)
    assert qemu_pvh_kernel(with_note) == with_note.path / "vmlinux"
    without = entry(tmp_path / "b", pvh=False)
    assert without.vmlinux_path is not None  # extracted for Firecracker all the same
    assert qemu_pvh_kernel(without) is None


def test_restore_boots_what_the_snapshot_was_booted_with(tmp_path: Path) -> None:
    with_note = entry(tmp_path / "a", pvh=True)
    assert qemu_pvh_kernel(with_note, {PVH_BOOT_KEY: True}) == with_note.path / "vmlinux"
    # Booted from the bzImage, or taken before banger booted PVH: the bzImage again.
    assert qemu_pvh_kernel(with_note, {PVH_BOOT_KEY: False}) is None
    assert qemu_pvh_kernel(with_note, {"cmdline": "x"}) is None
    without = entry(tmp_path / "b", pvh=False)
    with pytest.raises(InvalidArgument, match="kernel: k has no PVH vmlinux"):
        qemu_pvh_kernel(without, {PVH_BOOT_KEY: True})


def test_firecracker_never_carries_a_pvh_kernel(tmp_path: Path) -> None:
    with_note = entry(tmp_path, pvh=True)
    spec = dataclasses.replace(SPEC, pvh_kernel=with_note.path / "vmlinux")
    files = driver_files(with_note, Path("/r/fc.sock"))
    fc = FirecrackerDriver().adapt_spec(spec, files)
    assert fc.kernel == with_note.path / "vmlinux" and fc.pvh_kernel is None
    assert fc.control_socket == Path("/r/fc.sock") and fc.accelerator == "kvm"
    assert QemuDriver().adapt_spec(spec, files) is spec


def test_the_neutral_spec_carries_the_tap_both_ways_and_each_driver_keeps_one(
    tmp_path: Path,
) -> None:
    with_note = entry(tmp_path, pvh=True)
    spec = dataclasses.replace(SPEC, tap_fd=7, tap_name="bgtap0")
    files = driver_files(with_note, Path("/r/fc.sock"))
    assert QemuDriver().adapt_spec(spec, files) is spec  # its argv prefers the descriptor
    fc = FirecrackerDriver().adapt_spec(spec, files)
    assert (fc.tap_fd, fc.tap_name, fc.agent_socket) == (None, "bgtap0", None)


def test_firecracker_refuses_an_entry_without_a_vmlinux_naming_why(tmp_path: Path) -> None:
    files = driver_files(entry(tmp_path, pvh=False), Path("/r/fc.sock"))
    files = dataclasses.replace(files, vmlinux=None, no_vmlinux="no ELF found")
    with pytest.raises(InvalidArgument, match="kernel: k cannot boot under Firecracker: no ELF"):
        FirecrackerDriver().adapt_spec(SPEC, files)
