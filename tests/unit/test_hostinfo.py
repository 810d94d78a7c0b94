"""Host facts: parsers against samples from other machines, readers against this one."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from banger import hostinfo
from banger.hostinfo import KvmStatus

INTEL_VMX = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2599.998
flags\t\t: fpu vme de pse tsc msr pae constant_tsc vmx ssse3 hypervisor
processor\t: 1
flags\t\t: fpu vme de pse tsc msr pae constant_tsc vmx ssse3 hypervisor
"""
AMD_SVM = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu MHz\t\t: 3400.000
flags\t\t: fpu vme de pse tsc msr pae constant_tsc svm lahf_lm
"""
# A cloud sandbox guest: KVM is offered paravirtually (kvm_pvm), no vmx/svm.
NESTED_PVM = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2100.000
flags\t\t: fpu vme de pse tsc constant_tsc nonstop_tsc tsc_known_freq hypervisor avx2
"""
SCALING_TSC = """\
processor\t: 0
cpu MHz\t\t: 800.123
flags\t\t: fpu tsc msr
"""
PROC_MODULES_PVM = """\
kvm_pvm 61440 0 - Live 0x0000000000000000
kvm 1146880 1 kvm_pvm, Live 0x0000000000000000
tun 61440 2 - Live 0x0000000000000000
"""
PROC_MODULES_INTEL = """\
kvm_intel 380928 0 - Live 0x0000000000000000
kvm 1146880 1 kvm_intel, Live 0x0000000000000000
irqbypass 16384 1 kvm, Live 0x0000000000000000
"""


def test_cpu_flags_reads_first_processor() -> None:
    flags = hostinfo.cpu_flags(INTEL_VMX)
    assert "vmx" in flags and "constant_tsc" in flags
    assert hostinfo.cpu_flags("processor : 0\n") == frozenset()


@pytest.mark.parametrize(
    ("cpuinfo", "expected"), [(INTEL_VMX, True), (AMD_SVM, True), (NESTED_PVM, False)]
)
def test_hardware_virtualisation_flag(cpuinfo: str, expected: bool) -> None:
    assert hostinfo.has_hardware_virtualisation(cpuinfo) is expected


def test_vmx_as_substring_of_another_flag_does_not_count() -> None:
    assert not hostinfo.has_hardware_virtualisation("flags\t: fpu vmx_ept avx512_svmx\n")


def test_loaded_modules() -> None:
    assert hostinfo.loaded_modules(PROC_MODULES_PVM) == {"kvm_pvm", "kvm", "tun"}
    assert hostinfo.loaded_modules("") == frozenset()


def _status(
    *, present: bool = True, accessible: bool = True, cpuinfo: str = INTEL_VMX, modules: str = ""
) -> KvmStatus:
    return hostinfo.kvm_status_from(
        device_present=present,
        device_accessible=accessible,
        cpuinfo=cpuinfo,
        modules=hostinfo.loaded_modules(modules),
    )


def test_kvm_usable_with_vmx_and_access() -> None:
    status = _status(modules=PROC_MODULES_INTEL)
    assert status.usable_for_ordinary_guests
    assert hostinfo.choose_accelerator(status) == "kvm"


def test_kvm_missing_device() -> None:
    status = _status(present=False, accessible=False)
    assert not status.usable_for_ordinary_guests
    assert "does not exist" in status.reason
    assert hostinfo.choose_accelerator(status) == "tcg"


def test_kvm_nested_paravirtual_is_not_usable_even_when_accessible() -> None:
    status = _status(cpuinfo=NESTED_PVM, modules=PROC_MODULES_PVM)
    assert not status.usable_for_ordinary_guests
    assert status.paravirtual and not status.hardware_virtualisation
    assert "kvm_pvm" in status.reason
    assert hostinfo.choose_accelerator(status) == "tcg"


def test_kvm_without_cpu_flags() -> None:
    status = _status(cpuinfo=NESTED_PVM)
    assert not status.usable_for_ordinary_guests
    assert "neither vmx nor svm" in status.reason


def test_kvm_present_but_not_accessible() -> None:
    status = _status(accessible=False, cpuinfo=AMD_SVM)
    assert not status.usable_for_ordinary_guests
    assert "cannot open" in status.reason


def test_permission_is_not_blamed_when_kvm_could_not_work_anyway() -> None:
    status = _status(accessible=False, cpuinfo=NESTED_PVM, modules=PROC_MODULES_PVM)
    assert "cannot open" not in status.reason


def test_tsc_from_kernel_log_prefers_refined_calibration() -> None:
    log = (
        "[    0.000000] tsc: Detected 2600.000 MHz processor\n"
        "[    1.234567] tsc: Refined TSC clocksource calibration: 2599.998 MHz\n"
    )
    assert hostinfo.tsc_khz_from_kernel_log(log) == 2599998
    assert hostinfo.tsc_khz_from_kernel_log(log.splitlines()[0]) == 2600000
    assert hostinfo.tsc_khz_from_kernel_log("[ 0.1] tsc: Detected 2100.5 MHz processor") == 2100500
    assert hostinfo.tsc_khz_from_kernel_log("nothing about clocks") is None


def test_tsc_from_cpuinfo_needs_constant_tsc() -> None:
    assert hostinfo.tsc_khz_from_cpuinfo(INTEL_VMX) == 2599998
    assert hostinfo.tsc_khz_from_cpuinfo(NESTED_PVM) == 2100000
    assert hostinfo.tsc_khz_from_cpuinfo(SCALING_TSC) is None


def test_memory_from_meminfo() -> None:
    assert hostinfo.memory_mib_from_meminfo("MemTotal:       24684092 kB\nMemFree: 1 kB\n") == 24105
    assert hostinfo.memory_mib_from_meminfo("MemFree: 1 kB\n") is None


def test_dm_driver_version() -> None:
    working = "Library version:   1.02.185 (2022-05-18)\nDriver version:    4.48.0\n"
    assert hostinfo.dm_driver_version(working) == "4.48.0"
    broken = (
        "Library version:   1.02.185 (2022-05-18)\n"
        "/dev/mapper/control: open failed: No such device\n"
        "Incompatible libdevmapper 1.02.185 (2022-05-18) and kernel driver (unknown version).\n"
    )
    assert hostinfo.dm_driver_version(broken) is None


def _elf64(program_header_types: list[int]) -> bytes:
    """A minimal 64-bit little-endian ELF header followed by its program headers."""
    phoff, phentsize = 64, 56
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,
        62,
        1,
        0,
        phoff,
        0,
        0,
        64,
        phentsize,
        len(program_header_types),
        0,
        0,
        0,
    )
    phdrs = b"".join(struct.pack("<II", t, 0) + bytes(phentsize - 8) for t in program_header_types)
    return header + phdrs


def _elf32(program_header_types: list[int]) -> bytes:
    phoff, phentsize = 52, 32
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, 0, phoff, 0, 0, 52, phentsize, len(program_header_types), 0, 0, 0
    )
    phdrs = b"".join(struct.pack("<I", t) + bytes(phentsize - 4) for t in program_header_types)
    return header + phdrs


def test_elf_static_detection_on_samples() -> None:
    pt_load, pt_interp, pt_dynamic = 1, 3, 2
    assert hostinfo.elf_is_static(_elf64([pt_load, pt_load])) is True
    assert hostinfo.elf_is_static(_elf64([6, pt_interp, pt_load, pt_dynamic])) is False
    assert hostinfo.elf_is_static(_elf32([pt_load])) is True
    assert hostinfo.elf_is_static(_elf32([pt_interp, pt_load])) is False
    assert hostinfo.elf_is_static(b"#!/bin/sh\necho hi\n" + bytes(64)) is None
    assert hostinfo.elf_is_static(_elf64([pt_load, pt_interp])[:100]) is None  # cut off


def test_elf_static_detection_on_real_binaries() -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None  # busybox-static is a listed system package
    assert hostinfo.binary_is_static(Path(busybox)) is True
    assert hostinfo.binary_is_static(Path("/bin/ls")) is False
    assert hostinfo.binary_is_static(Path("/etc/hostname")) is None


# -- this host --------------------------------------------------------------


def test_kvm_status_on_this_host_matches_its_cpu_flags() -> None:
    status = hostinfo.kvm_status()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert status.device_present == os.path.exists("/dev/kvm")
    assert status.hardware_virtualisation == hostinfo.has_hardware_virtualisation(cpuinfo)
    if not status.hardware_virtualisation or status.paravirtual:
        assert not status.usable_for_ordinary_guests
        assert hostinfo.choose_accelerator(status) == "tcg"


def test_this_host_is_the_nested_paravirtual_case() -> None:
    # The machine these tests were written on: kvm_pvm and no vmx/svm. A host
    # with real KVM skips this; the parser tests above cover it.
    if not Path("/sys/module/kvm_pvm").exists():
        pytest.skip("not a kvm_pvm host")
    status = hostinfo.kvm_status()
    assert status.paravirtual
    assert not status.usable_for_ordinary_guests
    assert "kvm_pvm" in status.reason


def test_host_numbers_are_plausible() -> None:
    assert hostinfo.host_cpu_count() >= 1
    memory = hostinfo.host_memory_mib()
    assert memory is not None and memory > 256
    tsc = hostinfo.host_tsc_khz()
    assert tsc is not None and 500_000 < tsc < 10_000_000


def test_reflink_probe_answers_and_cleans_up(short_tmp: Path) -> None:
    before = sorted(short_tmp.iterdir())
    probe = hostinfo.reflink_supported(short_tmp)
    assert isinstance(probe.ok, bool) and str(short_tmp) in probe.detail
    assert sorted(short_tmp.iterdir()) == before


def test_reflink_probe_on_missing_directory(short_tmp: Path) -> None:
    probe = hostinfo.reflink_supported(short_tmp / "absent")
    assert not probe
    assert "cannot probe" in probe.detail


def test_device_mapper_probe_agrees_with_dmsetup() -> None:
    probe = hostinfo.device_mapper_usable()
    if shutil.which("dmsetup") is None:
        assert not probe
        return
    import subprocess

    out = subprocess.run(["dmsetup", "version"], capture_output=True, text=True, check=False)
    assert probe.ok == ("Driver version:" in out.stdout)


def test_device_probes_match_the_filesystem() -> None:
    assert hostinfo.loop_devices_available().ok == os.path.exists("/dev/loop-control")
    tun = hostinfo.tun_accessible()
    assert tun.ok == (
        os.path.exists("/dev/net/tun") and os.access("/dev/net/tun", os.R_OK | os.W_OK)
    )
