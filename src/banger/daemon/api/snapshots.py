"""``/v1/snapshots``: list, show, remove and restore VM snapshots
(:mod:`banger.daemon.vms.snapshots`, ``.snapshot_restore``).

A snapshot is taken at ``POST /v1/vms/{ref}/snapshots``
(:mod:`banger.daemon.api.vms.snapshots`). A restore starts an operation (202);
listing, showing and removing are immediate.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from banger.api_models import Operation, Request
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots


class SnapshotRestoreRequest(Request):
    name: str = Field(description="The new VM's name (a DNS label).")


def snapshot_router(snapshots: Snapshots) -> APIRouter:
    router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"])
    restores = SnapshotRestore(snapshots)

    @router.get("")
    async def listing(vm: str | None = None) -> list[dict[str, Any]]:
        """All snapshots, or those of one VM (by name or id; also one that is gone)."""
        return await snapshots.listing(vm)

    @router.get("/{ref}")
    async def show(ref: str) -> dict[str, Any]:
        return await snapshots.show(ref)

    @router.delete("/{ref}")
    async def remove(ref: str) -> dict[str, Any]:
        """Delete the snapshot's record and files (VMs restored from it keep running)."""
        return await snapshots.remove(ref)

    @router.post("/{ref}/restore", status_code=202)
    async def restore(ref: str, request: SnapshotRestoreRequest) -> Operation:
        """A new VM running the saved guest: re-identified with its own address through the guest
        agent (QEMU); Firecracker and older snapshots keep the saved address (refused if taken)."""
        return await restores.restore(ref, request.name)

    return router
