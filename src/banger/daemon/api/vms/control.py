"""``POST /v1/vms/{ref}/pause`` and ``/resume``: operations, like the other lifecycle calls."""

from __future__ import annotations

from fastapi import APIRouter

from banger.api_models import Operation
from banger.daemon.vms.control import VMControl
from banger.daemon.vms.stack import VMStack


def control_routes(stack: VMStack) -> APIRouter:
    router = APIRouter(tags=["vms"])
    control = VMControl(stack.vms)

    @router.post("/{ref}/pause", status_code=202)
    async def pause(ref: str) -> Operation:
        """Stop the VM's vCPUs (QMP stop / Firecracker Paused); memory and network stay."""
        return await control.pause(ref)

    @router.post("/{ref}/resume", status_code=202)
    async def resume(ref: str) -> Operation:
        """Continue a paused VM where it stopped."""
        return await control.resume(ref)

    return router
