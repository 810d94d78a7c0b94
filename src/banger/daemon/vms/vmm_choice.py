"""Which VMM driver a VM runs on, and what that changes in its launch spec.

The choice is made once, at ``vm create`` (config ``vmm`` through
:func:`banger.vmm.select.select_driver`), and stored on the VM row (``vmm``)
with the reason (``config.vmm_reason``); every later start uses the stored
driver, whatever the config says by then, so a VM keeps its driver across
restarts of the VM and of the daemon.

QEMU and Firecracker take the same :class:`~banger.vmm.base.LaunchSpec` with
three differences, applied by :func:`adapt_spec`:

- the tap: QEMU gets the helper's open descriptor; Firecracker opens the
  (persistent, owner-owned) tap by name itself, so the descriptor is closed
  and only the name is passed;
- the kernel: Firecracker boots the entry's uncompressed ``vmlinux`` (QEMU
  does too, through its PVH entry, when it has the note: :func:`qemu_pvh_kernel`);
- the accelerator: Firecracker is KVM only (no TCG command-line extras).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.config import Config
from banger.errors import BangerError, InvalidArgument
from banger.helper.client import HelperClient
from banger.kernels.store import KernelEntry
from banger.kernels.vmlinux import kernel_capabilities
from banger.vmm.base import LaunchSpec, VMMDriver
from banger.vmm.select import DriverName

#: ``() -> (driver, reason)``: the stack binds config and host facts into it.
Selector = Callable[[], tuple[DriverName, str]]
VMM_REASON_KEY = "vmm_reason"


@dataclass(frozen=True)
class DriverSet:
    """The daemon's drivers by name, and how a new VM picks one."""

    drivers: dict[str, VMMDriver]
    select: Selector

    def get(self, name: str) -> VMMDriver:
        try:
            return self.drivers[name]
        except KeyError:
            raise BangerError(
                f"vmm: this VM runs on {name!r}, which this bangerd has no driver for",
                hint="recreate the VM, or run a banger that has the driver",
            ) from None

    def choose(self) -> tuple[str, str]:
        name, reason = self.select()
        self.get(name)
        return name, reason


def firecracker_kernel(entry: KernelEntry) -> Path:
    """The ELF ``vmlinux`` of a kernel entry, or an error saying why there is none."""
    path = entry.vmlinux_path
    if path is not None:
        return path
    _ok, why = kernel_capabilities(entry.path)["firecracker"]
    raise InvalidArgument(
        f"kernel: {entry.name} cannot boot under Firecracker: {why}",
        hint="pull or import the kernel again (banger extracts a vmlinux now), "
        "or create the VM with vmm = 'qemu'",
    )


#: VM config and snapshot meta key: the QEMU guest was booted through the PVH
#: ``vmlinux`` (True) or the bzImage (False, and absent from older records).
PVH_BOOT_KEY = "pvh_boot"
#: VM config and snapshot meta key: the VM was launched with a guest agent channel
#: (True; absent from older records). A restore adds the channel only when the
#: snapshot had it: the device set is part of the saved machine.
AGENT_CHANNEL_KEY = "agent_channel"


def qemu_pvh_kernel(entry: KernelEntry, snapshot: Mapping[str, Any] | None = None) -> Path | None:
    """The PVH ``vmlinux`` a QEMU boot of ``entry`` uses, or None for its bzImage.

    A cold boot takes PVH whenever the entry has a ``vmlinux`` with the note.
    A restore (``snapshot``: the snapshot's meta) boots what the snapshot
    recorded under :data:`PVH_BOOT_KEY`, absent meaning an older snapshot booted
    from the bzImage: QEMU's boot ROM is part of the saved machine.
    """
    from banger.kernels.vmlinux import qemu_pvh_image

    if snapshot is None:
        return qemu_pvh_image(entry.path)
    if snapshot.get(PVH_BOOT_KEY) is not True:
        return None
    found = qemu_pvh_image(entry.path)
    if found is None:
        raise InvalidArgument(
            f"kernel: {entry.name} has no PVH vmlinux, which the snapshot was booted with",
            hint="the kernel entry changed under the snapshot; pull or import it again",
        )
    return found


def adapt_spec(
    spec: LaunchSpec, driver: str, entry: KernelEntry, *, socket: Path, tap: str
) -> LaunchSpec:
    """``spec`` as built for QEMU, changed for ``driver`` (see the module docstring)."""
    if driver != "firecracker":
        return spec
    return dataclasses.replace(
        spec,
        kernel=firecracker_kernel(entry),
        pvh_kernel=None,
        tap_fd=None,
        tap_name=tap,
        accelerator="kvm",
        control_socket=socket,
        # Firecracker's channel is its hybrid vsock, not wired into its launch plan yet.
        agent_socket=None,
    )


def build_drivers(config: Config, qemu: VMMDriver, jailed: VMMDriver | None = None) -> DriverSet:
    """QEMU, and Firecracker plain or under its jailer (``firecracker.jailer``).

    ``auto`` asks the host each time a VM is created (a Firecracker installed
    later is picked up without restarting bangerd); the answer is then stored.
    """
    from banger.hostinfo import kvm_status
    from banger.vmm.firecracker import FirecrackerDriver
    from banger.vmm.select import select_driver

    settings = config.firecracker
    firecracker = jailed if jailed is not None else FirecrackerDriver(settings.binary)

    def select() -> tuple[DriverName, str]:
        return select_driver(config.vmm, settings.binary, kvm_status())

    return DriverSet({"qemu": qemu, "firecracker": firecracker}, select)


def jailed_driver(config: Config, helper: Callable[..., HelperClient]) -> VMMDriver | None:
    """Firecracker started by the root helper's ``start_jailer`` op, when configured."""
    if not config.firecracker.jailer:
        return None
    from banger.daemon.vms.jailed import JailedFirecracker

    return JailedFirecracker(helper())
