"""``POST /v1/vms/{ref}/workspace/prepare`` and ``…/workspace/export``.

Both start an operation (202) and return it; its last ``result`` event holds
what happened (see :mod:`banger.daemon.workspace_svc`).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from banger.api_models import Operation, Request
from banger.daemon.vms.stack import VMStack
from banger.daemon.workspace_svc import WorkspaceService


class WorkspacePrepareRequest(Request):
    path: str = Field(description="Absolute host path inside the repository to copy.")
    dest: str | None = Field(
        default=None,
        description="Guest directory (absolute, or relative to /root); default /root/<repo name>.",
    )
    force: bool = Field(
        default=False,
        description="Replace an earlier copy even if it holds work that was never exported.",
    )


class WorkspaceExportRequest(Request):
    path: str = Field(description="Absolute host path inside the repository to export into.")
    branch: str | None = Field(default=None, description="Host branch; default banger/<vm>.")
    guest_path: str | None = Field(
        default=None, description="The guest copy; default /root/<repo name>."
    )
    force: bool = Field(default=False, description="Replace an existing branch.")


def workspace_routes(stack: VMStack) -> APIRouter:
    router = APIRouter(tags=["workspaces"])
    workspaces = WorkspaceService(stack.vms)

    @router.post("/{ref}/workspace/prepare", status_code=202)
    async def prepare(ref: str, request: WorkspacePrepareRequest) -> Operation:
        """Copy a host repository into the VM (tracked + untracked-not-ignored + .git)."""
        return await workspaces.prepare(ref, request.path, request.dest, force=request.force)

    @router.post("/{ref}/workspace/export", status_code=202)
    async def export(ref: str, request: WorkspaceExportRequest) -> Operation:
        """Bring the guest copy's commits and uncommitted changes back as a host branch."""
        return await workspaces.export(
            ref,
            request.path,
            branch=request.branch,
            guest_path=request.guest_path,
            force=request.force,
        )

    return router
