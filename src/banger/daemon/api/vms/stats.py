"""``GET /v1/vms/{ref}/stats``.

Stats combine the host view (:mod:`banger.vmm.stats`: VMM process, disk files,
tap counters) with the guest's own (:mod:`banger.guest.stats`, one SSH
command). A guest that does not answer still gets its host stats, with the
reason in ``guest_error``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter

from banger.daemon.vms.stack import VMStack
from banger.errors import BangerError
from banger.guest.stats import GuestStats, guest_stats_on
from banger.store import VMState
from banger.vmm.stats import HostStats, ProcessSampler, host_stats

GUEST_STATS_TIMEOUT = 10.0


@dataclass(frozen=True)
class VMStats:
    vm: str
    state: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    host: HostStats
    guest: GuestStats | None
    guest_error: str | None


def stats_routes(stack: VMStack) -> APIRouter:
    router = APIRouter(tags=["vms"])
    vms = stack.vms
    sampler = ProcessSampler()

    @router.get("/{ref}/stats")
    async def stats(ref: str, guest: bool = True) -> VMStats:
        """Host-side (and, when running, guest-side) statistics of one VM."""
        vm = await asyncio.to_thread(vms.store.resolve_vm, ref)
        alive = vms.alive(vm)
        disks = {
            "root": vms.pipeline.root_disk_of(vm).path,
            "work": vms.paths.vm_work_disk(vm.id),
        }
        host = await asyncio.to_thread(
            host_stats,
            sampler,
            pid=vm.pid if alive else None,
            start_time=vm.pid_start_time if alive else None,
            disks=disks,
            tap=vm.tap if alive else None,
        )
        inside: GuestStats | None = None
        error: str | None = None
        if guest and alive and vm.state == VMState.RUNNING and vm.ip is not None:
            try:
                async with asyncio.timeout(GUEST_STATS_TIMEOUT * 2):
                    async with vms.pipeline.conns.channel(
                        vm, connect_timeout=GUEST_STATS_TIMEOUT
                    ) as conn:  # the held connection: no handshake per stats call
                        inside = await guest_stats_on(conn, timeout=GUEST_STATS_TIMEOUT)
            except BangerError as exc:
                error = exc.message
            except TimeoutError:
                error = f"the guest did not answer within {GUEST_STATS_TIMEOUT * 2:g}s"
        elif guest:
            error = f"VM is {vm.state.value}"
        return VMStats(
            vm=vm.name,
            state=vm.state.value,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            work_disk_size=vm.work_disk_size,
            host=host,
            guest=inside,
            guest_error=error,
        )

    return router
