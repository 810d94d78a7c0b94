"""``POST /v1/vms/{ref}/set``: a VM's CPUs, memory and work disk size (``vm set``).

The work is :mod:`banger.daemon.vm_set`; it answers with an operation (202).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from banger.api_models import Operation, Request
from banger.daemon.vm_set import VMSettingsChange, set_vm
from banger.daemon.vms.stack import VMStack


class VMSetRequest(Request):
    vcpus: int | None = Field(default=None, description="CPUs from the next start.")
    memory_mib: int | None = Field(default=None, description="Memory (MiB) from the next start.")
    work_disk_size: int | None = Field(
        default=None, description="Grow the work disk to this many bytes (VM stopped)."
    )


def settings_routes(stack: VMStack) -> APIRouter:
    router = APIRouter(tags=["vms"])
    vms = stack.vms

    @router.post("/{ref}/set", status_code=202)
    async def set_settings(ref: str, request: VMSetRequest) -> Operation:
        """Change CPUs/memory (next start) and grow the work disk (stopped VMs only)."""
        change = VMSettingsChange(request.vcpus, request.memory_mib, request.work_disk_size)
        return await set_vm(vms, ref, change)

    return router
