"""Build the VM-side services (kernels, images, host network, VMs) for one daemon."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from banger.config import Config
from banger.daemon.guestconn import GuestConns
from banger.daemon.hostnet import HostNetwork
from banger.daemon.images_svc import ImageService
from banger.daemon.kernels_svc import KernelService
from banger.daemon.ops import Operations
from banger.daemon.vms.pipeline import Accel, Pipeline
from banger.daemon.vms.service import VMService
from banger.daemon.vms.vmm_choice import build_drivers, jailed_driver
from banger.helper.client import HelperClient
from banger.hostinfo import choose_accelerator, device_mapper_usable, host_tsc_khz, kvm_status
from banger.paths import Paths
from banger.store import Store
from banger.vmm.qemu import QemuDriver

log = logging.getLogger(__name__)

#: Seconds from VMM launch to a working SSH login before one retry (TCG boots take
#: ~7 s with the fast init and ~17 s with systemd here; two guests at once, more).
BOOT_TIMEOUT = 90.0
#: Environment override of :data:`BOOT_TIMEOUT` (tests and slow machines).
BOOT_TIMEOUT_ENV = "BANGER_BOOT_TIMEOUT"


@dataclass(frozen=True)
class VMStack:
    kernels: KernelService
    images: ImageService
    hostnet: HostNetwork
    vms: VMService

    @property
    def guest_conns(self) -> GuestConns:
        """The held guest connections (one per running VM), kept by the start pipeline."""
        return self.vms.pipeline.conns


def detect_accelerator() -> Accel:
    status = kvm_status()
    kind = choose_accelerator(status)
    tsc = host_tsc_khz() if kind == "tcg" else None
    return Accel(kind, status.reason, tsc)


def boot_timeout(env: dict[str, str] | None = None) -> float:
    raw = (env if env is not None else dict(os.environ)).get(BOOT_TIMEOUT_ENV)
    if not raw:
        return BOOT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", BOOT_TIMEOUT_ENV, raw)
        return BOOT_TIMEOUT
    return value if value > 0 else BOOT_TIMEOUT


def build_stack(paths: Paths, config: Config, store: Store, ops: Operations) -> VMStack:
    publish_lock = asyncio.Lock()

    def helper(timeout: float | None = 60.0) -> HelperClient:
        return HelperClient(paths.helper_socket, timeout=timeout)

    kernels = KernelService(paths, config, store, publish_lock)
    images = ImageService(paths, config, store, publish_lock, helper)
    hostnet = HostNetwork(config, helper())
    accel = detect_accelerator()
    log.info("guests use %s (%s)", accel.kind, accel.reason)
    qemu = QemuDriver()
    pipeline = Pipeline(
        paths=paths,
        config=config,
        store=store,
        hostnet=hostnet,
        driver=qemu,
        accel=accel,
        boot_timeout=boot_timeout(),
        drivers=build_drivers(config, qemu, jailed_driver(config, helper)),
        # Firecracker's raw root disks: a dm snapshot through the helper where the
        # state filesystem has no reflink and the kernel has device-mapper.
        helper_call=lambda op, **args: helper().call(op, **args),
        dm_usable=device_mapper_usable().ok,
    )
    vms = VMService(config, ops, kernels, images, pipeline)
    return VMStack(kernels=kernels, images=images, hostnet=hostnet, vms=vms)
