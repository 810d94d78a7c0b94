"""``POST /v1/vms/{ref}/fork``: N running copies of a running VM (:mod:`banger.daemon.vms.fork`).

It starts a ``vm.fork`` operation (202) and answers with it, the children's
names and how their disks are copied.
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.api_models import VMForkRequest, VMForkStarted
from banger.daemon.vms.fork import Fork
from banger.daemon.vms.snapshots import Snapshots


def fork_routes(snapshots: Snapshots) -> APIRouter:
    router = APIRouter(tags=["snapshots"])
    forks = Fork(snapshots)

    @router.post("/{ref}/fork", status_code=202)
    async def fork(ref: str, request: VMForkRequest) -> VMForkStarted:
        """Pause the VM briefly, save it once, resume it; restore N re-identified children."""
        op, plan = await forks.start(ref, request.count, request.name)
        return VMForkStarted(operation=op, children=plan.children, disk_copies=plan.disk_copies)

    return router
