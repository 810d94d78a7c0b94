"""``/v1/vms`` and ``/v1/vms/{ref}``: list, create, show, SSH details, start, stop, restart, delete.

Thin handlers over :class:`~banger.daemon.vms.service.VMService`; every change
of state answers with an operation (202) to follow.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from banger.api_models import Operation, SSHInfo, VMCreateRequest, VMDetail, VMStopRequest
from banger.daemon.pools.service import Pools
from banger.daemon.vms.stack import VMStack


def lifecycle_routes(stack: VMStack, pools: Pools) -> APIRouter:
    router = APIRouter(tags=["vms"])
    vms = stack.vms

    @router.get("")
    async def list_vms() -> list[VMDetail]:
        """The owner's VMs (a pool's ready guests are listed by ``GET /v1/pools``)."""
        return await asyncio.to_thread(
            lambda: [vms.detail(v) for v in vms.store.list_vms() if v.pool is None]
        )

    @router.post("", status_code=202)
    async def create(request: VMCreateRequest) -> Operation:
        """Create (and by default start) a VM, or take a ready one from `pool`; follow the
        returned operation."""
        if request.pool is not None:
            return await pools.create(request)
        return await vms.create(request)

    @router.get("/{ref}")
    async def show(ref: str) -> VMDetail:
        return await vms.show(ref)

    @router.get("/{ref}/ssh")
    async def ssh(ref: str) -> SSHInfo:
        return await vms.ssh_info(ref)

    @router.post("/{ref}/start", status_code=202)
    async def start(ref: str) -> Operation:
        return await vms.start(ref)

    @router.post("/{ref}/stop", status_code=202)
    async def stop(ref: str, request: VMStopRequest | None = None) -> Operation:
        return await vms.stop(ref, (request or VMStopRequest()).timeout)

    @router.post("/{ref}/restart", status_code=202)
    async def restart(ref: str) -> Operation:
        return await vms.restart(ref)

    @router.delete("/{ref}", status_code=202)
    async def delete(ref: str, force: bool = False) -> Operation:
        return await vms.delete(ref, force=force)

    return router
