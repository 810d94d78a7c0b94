"""Facts about the host that decide how banger runs VMs here.

Every fact has a pure parser that takes file contents or command output as
arguments (so it is tested with samples from many machines) and a thin reader
that applies it to this host. Readers never raise for an ordinary "no": a
missing device or tool is an answer, not an error.

The important case is hardware virtualisation. ``/dev/kvm`` existing is not
enough: inside some cloud sandboxes KVM is a *nested paravirtual* flavour
(``kvm_pvm``) that only runs specially built guest kernels, and the CPU flags
have no ``vmx``/``svm``. An ordinary distro kernel hangs there, so QEMU must
use software emulation (TCG) instead.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from banger.errors import CommandError
from banger.proc import run, which

Accelerator = Literal["kvm", "tcg"]

KVM_DEVICE = Path("/dev/kvm")
TUN_DEVICE = Path("/dev/net/tun")
LOOP_CONTROL = Path("/dev/loop-control")
DM_CONTROL = Path("/dev/mapper/control")

#: Kernel modules that provide a /dev/kvm unable to run ordinary guest kernels.
PARAVIRTUAL_KVM_MODULES = frozenset({"kvm_pvm"})

#: Bound on every probe command: doctor must stay fast even on a sick host.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    """A yes/no host fact with a one-line explanation of the answer."""

    ok: bool
    detail: str

    def __bool__(self) -> bool:
        # So ``if device_mapper_usable():`` means what it reads as.
        return self.ok


@dataclass(frozen=True)
class KvmStatus:
    usable_for_ordinary_guests: bool
    reason: str
    device_present: bool = False
    device_accessible: bool = False
    hardware_virtualisation: bool = False
    paravirtual: bool = False


# -- pure parsers ------------------------------------------------------------


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo``."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_hardware_virtualisation(cpuinfo: str) -> bool:
    """True when the CPU advertises Intel VT-x (``vmx``) or AMD-V (``svm``)."""
    return bool(cpu_flags(cpuinfo) & {"vmx", "svm"})


def loaded_modules(proc_modules: str) -> frozenset[str]:
    """Module names from ``/proc/modules`` (first field of each line)."""
    return frozenset(line.split()[0] for line in proc_modules.splitlines() if line.strip())


def kvm_status_from(
    *,
    device_present: bool,
    device_accessible: bool,
    cpuinfo: str,
    modules: frozenset[str],
) -> KvmStatus:
    """Decide whether KVM can run an ordinary guest kernel, and say why not.

    Order matters: the most fundamental problem is reported, so a permission
    fix is never suggested on a host where KVM could not work anyway.
    """
    hw = has_hardware_virtualisation(cpuinfo)
    pv_modules = sorted(modules & PARAVIRTUAL_KVM_MODULES)
    facts = {
        "device_present": device_present,
        "device_accessible": device_accessible,
        "hardware_virtualisation": hw,
        "paravirtual": bool(pv_modules),
    }
    if not device_present:
        return KvmStatus(False, f"{KVM_DEVICE} does not exist (no KVM in this kernel)", **facts)
    if pv_modules:
        return KvmStatus(
            False,
            f"KVM here is nested paravirtual ({', '.join(pv_modules)}); it cannot run "
            "ordinary guest kernels",
            **facts,
        )
    if not hw:
        return KvmStatus(
            False, "the CPU flags have neither vmx nor svm (no hardware virtualisation)", **facts
        )
    if not device_accessible:
        return KvmStatus(False, f"{KVM_DEVICE} exists but this user cannot open it", **facts)
    return KvmStatus(True, "hardware virtualisation available through /dev/kvm", **facts)


def choose_accelerator(kvm: KvmStatus) -> Accelerator:
    """``kvm`` when it can run ordinary guests, software emulation otherwise."""
    return "kvm" if kvm.usable_for_ordinary_guests else "tcg"


_REFINED_TSC = re.compile(r"tsc: Refined TSC clocksource calibration: (\d+)\.(\d{1,3}) MHz")
_DETECTED_TSC = re.compile(r"tsc: Detected (\d+)\.(\d{1,3}) MHz processor")


def _mhz_to_khz(whole: str, frac: str) -> int:
    return int(whole) * 1000 + int(frac.ljust(3, "0"))


def tsc_khz_from_kernel_log(log: str) -> int | None:
    """The TSC rate the kernel settled on, from ``dmesg`` text.

    The refined calibration (late, precise) wins over the early detection.
    """
    refined = _REFINED_TSC.findall(log)
    if refined:
        return _mhz_to_khz(*refined[-1])
    detected = _DETECTED_TSC.findall(log)
    if detected:
        return _mhz_to_khz(*detected[-1])
    return None


def tsc_khz_from_cpuinfo(cpuinfo: str) -> int | None:
    """``cpu MHz`` of the first processor, in kHz, if the TSC is constant.

    Without ``constant_tsc`` the reported MHz follows frequency scaling and is
    not the TSC rate, so it is not used.
    """
    if "constant_tsc" not in cpu_flags(cpuinfo):
        return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "cpu MHz":
            match = re.fullmatch(r"(\d+)(?:\.(\d+))?", value.strip())
            if match:
                return _mhz_to_khz(match.group(1), (match.group(2) or "0")[:3])
    return None


def memory_mib_from_meminfo(meminfo: str) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def dm_driver_version(dmsetup_version_output: str) -> str | None:
    """The kernel driver version from ``dmsetup version``; None if it has none."""
    match = re.search(r"^Driver version:\s+(\S+)", dmsetup_version_output, re.MULTILINE)
    return match.group(1) if match else None


# -- readers for this host ------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def host_modules() -> frozenset[str]:
    """Loaded modules; falls back to ``/sys/module`` on kernels without ``/proc/modules``.

    Kernels built without module support (this sandbox's, for one) have no
    ``/proc/modules``, but built-in modules with parameters still appear under
    ``/sys/module``.
    """
    text = _read(Path("/proc/modules"))
    if text:
        return loaded_modules(text)
    try:
        return frozenset(p.name for p in Path("/sys/module").iterdir())
    except OSError:
        return frozenset()


def _is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def kvm_status() -> KvmStatus:
    return kvm_status_from(
        device_present=_is_char_device(KVM_DEVICE),
        device_accessible=os.access(KVM_DEVICE, os.R_OK | os.W_OK),
        cpuinfo=_read(Path("/proc/cpuinfo")),
        modules=host_modules(),
    )


def host_tsc_khz() -> int | None:
    """The host TSC rate in kHz (for ``tsc_early_khz=`` on TCG guests).

    Preference: a sysfs attribute some kernels export, then the kernel's own
    calibration from its log (readable by root, or when dmesg is unrestricted),
    then ``cpu MHz`` from /proc/cpuinfo when the TSC is constant.
    """
    sysfs = _read(Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz")).strip()
    if sysfs.isdigit():
        return int(sysfs)
    try:
        log = run(["dmesg"], timeout=PROBE_TIMEOUT, check=True).out
    except CommandError:
        log = ""
    from_log = tsc_khz_from_kernel_log(log)
    if from_log:
        return from_log
    return tsc_khz_from_cpuinfo(_read(Path("/proc/cpuinfo")))


def host_cpu_count() -> int:
    """CPUs this process may run on (honours cgroup/affinity limits)."""
    return len(os.sched_getaffinity(0))


def host_memory_mib() -> int | None:
    return memory_mib_from_meminfo(_read(Path("/proc/meminfo")))


def dm_in_proc_misc(proc_misc: str) -> bool:
    """Whether ``/proc/misc`` lists the device-mapper control device (dm core loaded)."""
    return any(line.split()[1:2] == ["device-mapper"] for line in proc_misc.splitlines())


def device_mapper_usable(proc_misc: Path = Path("/proc/misc")) -> Probe:
    """The kernel has device-mapper and dmsetup is installed (what banger-helper needs).

    Read from ``/proc/misc``, where device-mapper registers its control device,
    so the answer is the same for the owner's bangerd and doctor as for root:
    ``dmsetup version`` needs ``/dev/mapper/control``, which only root may
    open, and ``/dev/mapper/control`` existing proves nothing (dmsetup creates
    the node itself even when the kernel has no device-mapper driver). The
    snapshot target module is loaded by the kernel on the first
    ``dmsetup create``.
    """
    if which("dmsetup") is None:
        return Probe(False, "dmsetup is not installed")
    if not dm_in_proc_misc(_read(proc_misc)):
        return Probe(False, "the kernel has no device-mapper driver (not in /proc/misc)")
    return Probe(True, "device-mapper driver loaded (/proc/misc); banger-helper makes snapshots")


def reflink_supported(directory: Path) -> Probe:
    """Whether ``cp --reflink=always`` works inside ``directory``'s filesystem."""
    try:
        with tempfile.TemporaryDirectory(prefix=".reflink-", dir=directory) as tmp:
            src = Path(tmp) / "a"
            src.write_bytes(b"banger reflink probe\n")
            try:
                run(
                    ["cp", "--reflink=always", src, Path(tmp) / "b"],
                    timeout=PROBE_TIMEOUT,
                )
            except CommandError:
                return Probe(False, f"no reflink copies on the filesystem of {directory}")
    except OSError as exc:
        return Probe(False, f"cannot probe {directory}: {exc.strerror}")
    return Probe(True, f"reflink copies work in {directory}")


def loop_devices_available() -> Probe:
    if not _is_char_device(LOOP_CONTROL):
        return Probe(False, f"{LOOP_CONTROL} does not exist (no loop driver)")
    who = "this user" if os.access(LOOP_CONTROL, os.R_OK | os.W_OK) else "root only"
    return Probe(True, f"{LOOP_CONTROL} present ({who})")


def tun_accessible() -> Probe:
    """Whether this user can open ``/dev/net/tun`` itself (the helper always can)."""
    if not _is_char_device(TUN_DEVICE):
        return Probe(False, f"{TUN_DEVICE} does not exist")
    if os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        return Probe(True, f"{TUN_DEVICE} is usable by this user")
    return Probe(False, f"{TUN_DEVICE} is root-only")


def tun_present() -> bool:
    return _is_char_device(TUN_DEVICE)


_PT_INTERP = 3


def elf_is_static(header: bytes) -> bool | None:
    """Whether an ELF image has no program interpreter (is statically linked).

    ``header`` is the start of the file (program headers included). None when
    it is not an ELF file or the headers are cut off. A static-pie binary
    also has no interpreter and counts as static, which is what matters for an
    initramfs: nothing to load from a library path.
    """
    if len(header) < 52 or header[:4] != b"\x7fELF":
        return None
    is64 = header[4] == 2
    order: Literal["little", "big"] = "little" if header[5] == 1 else "big"

    def num(offset: int, size: int) -> int:
        return int.from_bytes(header[offset : offset + size], order)

    if is64:
        phoff, phentsize, phnum = num(32, 8), num(54, 2), num(56, 2)
    else:
        phoff, phentsize, phnum = num(28, 4), num(42, 2), num(44, 2)
    if phentsize == 0 or phoff + phentsize * phnum > len(header):
        return None
    return all(num(phoff + i * phentsize, 4) != _PT_INTERP for i in range(phnum))


def binary_is_static(path: Path) -> bool | None:
    try:
        with open(path, "rb") as f:
            return elf_is_static(f.read(65536))
    except OSError:
        return None
