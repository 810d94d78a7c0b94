"""VM snapshots over the API (:mod:`banger.daemon.vms.snapshots`, ``.snapshot_restore``).

``POST /v1/vms/{ref}/snapshots`` and ``POST /v1/snapshots/{ref}/restore``
start operations (202); the first answers with the operation and the
snapshot's name (chosen by the daemon unless given). Listing, showing and
removing are immediate.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from banger.api_models import Operation, Request
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots
from banger.daemon.vms.stack import VMStack


class SnapshotCreateRequest(Request):
    name: str | None = Field(
        default=None, description="Snapshot name (a DNS label); default <vm>-<timestamp>."
    )
    stop: bool = Field(
        default=False, description="Leave the VM paused afterwards instead of resuming it."
    )


class SnapshotStarted(BaseModel):
    operation: Operation
    snapshot: str


class SnapshotRestoreRequest(Request):
    name: str = Field(description="The new VM's name (a DNS label).")


def snapshot_router(stack: VMStack) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["snapshots"])
    snapshots = Snapshots(stack.vms)
    restores = SnapshotRestore(snapshots)
    snapshots.sweep()  # leftovers of a crash between writing and recording

    @router.post("/vms/{ref}/snapshots", status_code=202)
    async def create(ref: str, request: SnapshotCreateRequest) -> SnapshotStarted:
        """Pause the VM, save its memory and device state and copy its disks, then resume."""
        op, name = await snapshots.create(ref, request.name, stop=request.stop)
        return SnapshotStarted(operation=op, snapshot=name)

    @router.get("/snapshots")
    async def listing(vm: str | None = None) -> list[dict[str, Any]]:
        """All snapshots, or those of one VM (by name or id; also one that is gone)."""
        return await snapshots.listing(vm)

    @router.get("/snapshots/{ref}")
    async def show(ref: str) -> dict[str, Any]:
        return await snapshots.show(ref)

    @router.delete("/snapshots/{ref}")
    async def remove(ref: str) -> dict[str, Any]:
        """Delete the snapshot's record and files (VMs restored from it keep running)."""
        return await snapshots.remove(ref)

    @router.post("/snapshots/{ref}/restore", status_code=202)
    async def restore(ref: str, request: SnapshotRestoreRequest) -> Operation:
        """A new VM running the saved guest, with the snapshot's address (refused if taken)."""
        return await restores.restore(ref, request.name)

    return router
