"""Which VMM driver a VM runs on, and what the daemon offers it to boot with.

The choice is made once, at ``vm create`` (config ``vmm`` through
:func:`banger.vmm.select.select_driver`), and stored on the VM row (``vmm``)
with the reason (``VMConfig.vmm_reason``); every later start uses the stored
driver, whatever the config says by then, so a VM keeps its driver across
restarts of the VM and of the daemon.

The daemon builds one driver-neutral :class:`~banger.vmm.base.LaunchSpec`
(the tap by descriptor and by name, the bzImage with the PVH ``vmlinux`` QEMU
prefers: :func:`qemu_pvh_kernel`, the guest's boot facts instead of a command
line) and the :class:`~banger.vmm.base.DriverFiles` beside it (:func:`driver_files`);
each driver's ``adapt_spec`` keeps what it boots with and writes its own kernel
command line (Firecracker: the tap by name, the ELF ``vmlinux``, KVM, its API
socket, ``reboot=k``; QEMU: the TSC hint under TCG).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.config import Config
from banger.errors import BangerError, InvalidArgument
from banger.helper.client import HelperClient
from banger.kernels.store import KernelEntry
from banger.kernels.vmlinux import kernel_capabilities
from banger.vmm.base import DriverFiles, VMMDriver
from banger.vmm.select import DriverName

#: ``() -> (driver, reason)``: the stack binds config and host facts into it.
Selector = Callable[[], tuple[DriverName, str]]


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


def driver_files(entry: KernelEntry, api_socket: Path) -> DriverFiles:
    """What a driver may take beside the neutral spec, for a boot of ``entry``."""
    vmlinux = entry.vmlinux_path
    why = "" if vmlinux is not None else kernel_capabilities(entry.path)["firecracker"][1]
    return DriverFiles(
        kernel_name=entry.name, vmlinux=vmlinux, no_vmlinux=why, api_socket=api_socket
    )


#: Snapshot meta key (and :class:`~banger.store.VMConfig` field): the QEMU guest
#: was booted through the PVH ``vmlinux`` (True) or the bzImage (False, and absent
#: from older records).
PVH_BOOT_KEY = "pvh_boot"
#: Snapshot meta key (and :class:`~banger.store.VMConfig` field): the VM was
#: launched with a guest agent channel (True; absent from older records). A restore
#: adds the channel only when the snapshot had it: the device set is part of the
#: saved machine.
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
