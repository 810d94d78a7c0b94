"""A VM service whose Firecracker is the stand-in, shared by the Firecracker stand-in tests.

Firecracker cannot run here (no Firecracker binary; no hardware KVM for
ordinary guests), so ``firecracker`` is ``tests/firecracker_standin.py`` (see
:mod:`tests.standins`). It boots no guest, so the pipeline's two guest-facing
steps are replaced in :class:`StandInPipeline`, and only those: ``wait_ssh``
checks what the stand-in recorded (kernel = the entry's extracted ``vmlinux``,
the boot arguments, the root/work drives and the tap by name) instead of
logging in, and ``guest_poweroff`` (SSH) is not attempted. :func:`world` is
everything else, real: a store, the operations, the kernel import, the image,
the root helper in a network namespace it creates and deletes.

The guest agent: the stand-in serves the vsock socket (``fc_env`` names the
"guest"'s listener, see ``tests/firecracker_standin.py``); with ``agent_wait``
set, ``wait_ssh`` also waits for the agent's first answer through the VM's agent
endpoint and records it, as the real pipeline does beside SSH.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.api_models import KernelImportRequest
from banger.config import Config
from banger.daemon.hostnet import HostNetwork
from banger.daemon.images_svc import ImageService
from banger.daemon.kernels_svc import KernelService
from banger.daemon.ops import Operations, OpHandle
from banger.daemon.vms import agent_use
from banger.daemon.vms.pipeline import Accel, Pipeline
from banger.daemon.vms.service import VMService
from banger.daemon.vms.vmm_choice import DriverSet
from banger.guest.agent import VSOCK_PORT
from banger.helper.client import HelperClient
from banger.kernels.store import KernelEntry
from banger.paths import Paths
from banger.store import Store, VMRecord
from banger.vmm.base import Disk, LaunchSpec, VMMProcess, stable_mac
from banger.vmm.base import VMState as VMMState
from banger.vmm.firecracker.driver import FirecrackerDriver
from banger.vmm.qemu import QemuDriver
from banger.vmm.select import DriverName
from tests.firecracker_standin import GUEST_LISTENER_ENV
from tests.helper_launch import start_helper
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.namespace_guest import SavedIdentity
from tests.standins import standin_binary
from tests.support import Netns, netns, short_tmpdir, stop_pid


@dataclass
class StandInPipeline(Pipeline):
    """The real pipeline, minus the two steps that need a booted guest (see the docstring)."""

    checked: int = 0
    poweroffs: int = 0
    #: Seconds ``wait_ssh`` gives the guest agent to answer (0: not asked).
    agent_wait: float = 0.0
    #: False: VMs launch without the agent channel (no vsock), as banger's did before
    #: the vsock agent; their snapshots keep the old restore (address, MAC, hostname).
    agent_channel: bool = True

    def launch_spec(
        self,
        vm: VMRecord,
        kernel: KernelEntry,
        root: Disk,
        tap_fd: int,
        restore: Callable[[LaunchSpec], LaunchSpec] | None = None,
    ) -> LaunchSpec:
        spec = super().launch_spec(vm, kernel, root, tap_fd, restore)
        return spec if self.agent_channel else dataclasses.replace(spec, agent_socket=None)

    async def wait_ssh(self, vm: VMRecord, proc: VMMProcess, op: OpHandle) -> None:
        await op.stage("wait_ssh")
        driver = self.driver_for(vm)
        assert (await driver.status(proc)).state == VMMState.RUNNING
        console = self.paths.vm_console_log(vm.id).read_text()
        kernel = self.paths.kernel_dir(vm.kernel_id or "") / "vmlinux"
        assert f"[stand-in] Linux would boot {kernel}" in console
        assert f"ip={vm.ip}::" in console and "reboot=k" in console
        assert "root=/dev/vda rw" in console  # appended by "Firecracker" from the root drive
        log = (self.paths.vm_dir(vm.id) / "firecracker.log").read_text()
        for line in ("PUT /drives/root: ok", "PUT /drives/work: ok",
                     "PUT /network-interfaces/eth0: ok", "PUT /actions: ok"):  # fmt: skip
            assert line in log
        current = await asyncio.to_thread(self.store.get_vm, vm.id)
        if self.agent_wait and agent_use.has_channel(current.config):
            async with asyncio.timeout(self.agent_wait):
                took = await agent_use.first_answer(self.agent_endpoint(vm))
            await op.event("info", f"guest agent answered {took:.2f}s into the wait")
            await asyncio.to_thread(
                self.store.update_vm,
                vm.id,
                config=dataclasses.replace(current.config, agent_seen=True),
            )
        self.checked += 1

    async def guest_poweroff(self, vm: VMRecord) -> None:
        self.poweroffs += 1


@dataclass
class World:
    paths: Paths
    ns: Netns
    store: Store
    ops: Operations
    vms: VMService
    pipeline: StandInPipeline
    choice: list[tuple[DriverName, str]]


def make_service(w_paths: Paths, store: Store, fc_binary: str, choice: list[tuple[DriverName, str]]
                 ) -> tuple[VMService, StandInPipeline, Operations]:  # fmt: skip
    config = Config()
    lock = asyncio.Lock()

    def helper(timeout: float | None = 60.0) -> HelperClient:
        return HelperClient(w_paths.helper_socket, timeout=timeout)

    ops = Operations(store)
    kernels = KernelService(w_paths, config, store, lock)
    images = ImageService(w_paths, config, store, lock, helper)
    qemu = QemuDriver()
    drivers = DriverSet(
        {"qemu": qemu, "firecracker": FirecrackerDriver(fc_binary)}, lambda: choice[-1]
    )
    pipeline = StandInPipeline(
        paths=w_paths, config=config, store=store, hostnet=HostNetwork(config, helper()),
        driver=qemu, accel=Accel("tcg", "test", None), boot_timeout=5.0, drivers=drivers,
    )  # fmt: skip
    return VMService(config, ops, kernels, images, pipeline), pipeline, ops


@asynccontextmanager
async def world(fc_env: dict[str, str] | None = None) -> AsyncIterator[World]:
    with short_tmpdir("bgf-") as home, netns("bgf") as ns:
        paths = Paths(home / "c", home / "s", home / "k", home / "r")
        paths.ensure()
        helper_pid = start_helper(paths, os.getuid(), ns=ns)
        bins = home / "bin"
        bins.mkdir()
        fc = standin_binary(bins, env=fc_env)
        store = Store.open(paths.db)
        choice: list[tuple[DriverName, str]] = [("firecracker", "test: the Firecracker stand-in")]
        vms, pipeline, ops = make_service(paths, store, fc, choice)
        try:
            src = cached_debian_kernel()
            await vms.kernels.import_(
                KernelImportRequest(
                    path=str(src / "vmlinuz"), initrd=str(src / "initrd.img"), name="deb"
                )
            )
            await vms.images.register(str(cached_debian_image()), "deb")
            yield World(paths, ns, store, ops, vms, pipeline, choice)
        finally:
            for vm in store.list_vms():
                await finish(ops, await vms.delete(vm.id, force=True))
            stop_pid(helper_pid)
            store.close()


@asynccontextmanager
async def agent_world(prefix: str) -> AsyncIterator[tuple[Path, Path, World, SavedIdentity]]:
    """A world whose stand-in Firecracker connects each VM's vsock agent port to a Unix
    socket ``listener`` (a namespace guest or the guest router serves it), restored VMs'
    wait_ssh checked as :func:`restored_wait_ssh` does, and the identity the namespace
    guests are saved with (an address of the VM subnet no lease hands out first).
    Yields (a short temporary directory, the listener's path, the world, that identity)."""
    with short_tmpdir(prefix) as g:
        listener = g / "router.sock"
        async with world({GUEST_LISTENER_ENV: f"{VSOCK_PORT}={listener}"}) as w:
            w.pipeline.agent_wait = 120
            restored_wait_ssh(w)
            net = w.pipeline.config.network
            saved = SavedIdentity(
                address=f"{net.subnet.network_address + 250}/{net.subnet.prefixlen}"
            )
            yield g, listener, w, saved


def restored_wait_ssh(w: World) -> None:
    """``wait_ssh`` for a restored VM: the stand-in loaded the snapshot onto the VM's tap
    and runs it (nothing booted, so no SSH)."""
    boot_check = w.pipeline.wait_ssh

    async def wait_ssh(vm: VMRecord, proc: VMMProcess, op: OpHandle) -> None:
        log = (w.paths.vm_dir(vm.id) / "firecracker.log").read_text()
        if "snapshot loaded" not in log:
            await boot_check(vm, proc, op)
            return
        await op.stage("wait_ssh")
        assert (await w.pipeline.driver_for(vm).status(proc)).detail == "Running"
        line = next(x for x in log.splitlines() if "snapshot loaded; interfaces: " in x)
        ifaces = json.loads(line.split("snapshot loaded; interfaces: ", 1)[1])
        assert ifaces["eth0"]["host_dev_name"] == vm.tap  # the network override

    w.pipeline.wait_ssh = wait_ssh  # type: ignore[method-assign]


def tap_link(ns: Netns, name: str) -> dict[str, Any]:
    (link,) = json.loads(ns.run("ip", "-j", "link", "show", "dev", name).stdout)
    assert isinstance(link, dict)
    return link


async def run_op(ops: Operations, op: object) -> tuple[Any, list[str]]:
    op_id = op.id  # type: ignore[attr-defined]
    messages = [event.message async for event in ops.follow(op_id)]
    return await ops.get(op_id), messages


async def finish(ops: Operations, op: object) -> None:
    op_id = op.id  # type: ignore[attr-defined]
    async for _event in ops.follow(op_id):
        pass
    done = await ops.get(op_id)
    assert done.state == "succeeded", f"{done.kind} failed at {done.stage}: {done.error}"


def taps(ns: Netns) -> list[str]:
    out = ns.run("ip", "-o", "link", "show").stdout
    return [
        n for n in (line.split(":")[1].strip() for line in out.splitlines()) if n.startswith("bt-")
    ]


def standin_spec(d: Path, **changes: object) -> LaunchSpec:
    """A launch spec the Firecracker stand-in boots: sparse stand-in kernel and disks
    under ``d`` (made once), ``changes`` replacing any field."""
    for name, size in (("vmlinux", 4096), ("root.ext4", 8 << 20), ("work.ext4", 4 << 20)):
        if not (d / name).exists():
            with open(d / name, "wb") as f:
                f.truncate(size)
    spec = LaunchSpec(
        vm_id="t1",
        vcpus=2,
        memory_mib=128,
        kernel=d / "vmlinux",
        initrd=None,
        cmdline="console=ttyS0 root=/dev/vda rw panic=-1 reboot=k banger.work=/dev/vdb",
        root_disk=Disk(d / "root.ext4", "raw", "unsafe"),
        work_disk=d / "work.ext4",
        console_log=d / "console.log",
        control_socket=d / "fc.sock",
        vmm_log=d / "vmm.log",
        mac=stable_mac("t1"),
        tap_name="bt-t1",
        accelerator="kvm",
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
