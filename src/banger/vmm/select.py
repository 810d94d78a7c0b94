"""Which VMM driver a new VM gets: config ``vmm`` = auto | firecracker | qemu.

``auto`` picks Firecracker when its binary is found and KVM can run ordinary
guest kernels (see :mod:`banger.hostinfo`: a ``/dev/kvm`` that is nested
paravirtual does not count), otherwise QEMU, which falls back to software
emulation. An explicit choice that cannot work here is an error naming why, not
a silent fallback. A VM records the driver it was created with and keeps it
across restarts; this choice is made once, at create time.
"""

from __future__ import annotations

import shutil
from typing import Literal

from banger.errors import ConfigError
from banger.hostinfo import KvmStatus

DriverName = Literal["firecracker", "qemu"]
QEMU_BINARY = "qemu-system-x86_64"


def select_driver(
    config_vmm: str,
    firecracker_binary: str,
    kvm: KvmStatus,
    *,
    qemu_binary: str = QEMU_BINARY,
) -> tuple[DriverName, str]:
    """``(driver, reason)``; raises :class:`ConfigError` when the explicit choice cannot run."""
    if config_vmm not in ("auto", "firecracker", "qemu"):
        raise ConfigError([f"vmm: must be 'auto', 'firecracker' or 'qemu', got {config_vmm!r}"])
    found = shutil.which(firecracker_binary)
    if config_vmm == "qemu":
        _need_qemu(qemu_binary)
        return "qemu", "configured: vmm = 'qemu'"
    if config_vmm == "firecracker":
        if found is None:
            raise ConfigError(
                [f"vmm: 'firecracker' is configured but {firecracker_binary!r} is not found"]
            )
        if not kvm.usable_for_ordinary_guests:
            raise ConfigError(
                [f"vmm: 'firecracker' is configured but KVM is not usable: {kvm.reason}"]
            )
        return "firecracker", f"configured: vmm = 'firecracker' ({found})"
    if found is not None and kvm.usable_for_ordinary_guests:
        return "firecracker", f"auto: {found} found and {kvm.reason}"
    why = (
        f"{firecracker_binary!r} is not found"
        if found is None
        else f"KVM cannot run ordinary guests ({kvm.reason})"
    )
    _need_qemu(qemu_binary)
    return "qemu", f"auto: Firecracker not usable: {why}"


def _need_qemu(qemu_binary: str) -> None:
    if shutil.which(qemu_binary) is None:
        raise ConfigError([f"vmm: QEMU is needed but {qemu_binary!r} is not found"])
