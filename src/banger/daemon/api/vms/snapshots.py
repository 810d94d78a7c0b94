"""``POST /v1/vms/{ref}/snapshots``: take a snapshot of a running VM.

It starts an operation (202) and answers with it and the snapshot's name (chosen
by the daemon unless given). The snapshots themselves are at ``/v1/snapshots``
(:mod:`banger.daemon.api.snapshots`).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from banger.api_models import Operation, Request
from banger.daemon.vms.snapshots import Snapshots


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


def snapshot_routes(snapshots: Snapshots) -> APIRouter:
    router = APIRouter(tags=["snapshots"])

    @router.post("/{ref}/snapshots", status_code=202)
    async def create(ref: str, request: SnapshotCreateRequest) -> SnapshotStarted:
        """Pause the VM, save its memory and device state and copy its disks, then resume."""
        op, name = await snapshots.create(ref, request.name, stop=request.stop)
        return SnapshotStarted(operation=op, snapshot=name)

    return router
