"""``/v1/kernels``: the kernel store over the API.

Listing, showing, the default, importing, registering a build and removing are
immediate; a pull starts an operation (202).
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.api_models import (
    DefaultRequest,
    KernelBuildRegisterRequest,
    KernelImportRequest,
    KernelInfo,
    KernelPullRequest,
    Operation,
)
from banger.daemon.ops import OpHandle
from banger.daemon.vms.stack import VMStack


def kernel_router(stack: VMStack) -> APIRouter:
    router = APIRouter(prefix="/v1/kernels", tags=["kernels"])
    kernels = stack.kernels

    @router.get("")
    async def list_kernels() -> list[KernelInfo]:
        return await kernels.list()

    @router.get("/default")
    async def get_default() -> KernelInfo | None:
        return await kernels.get_default()

    @router.put("/default")
    async def set_default(request: DefaultRequest) -> KernelInfo:
        return await kernels.set_default(request.name)

    @router.post("/import")
    async def import_kernel(request: KernelImportRequest) -> KernelInfo:
        return await kernels.import_(request)

    @router.post("/register-build")
    async def register_build(request: KernelBuildRegisterRequest) -> KernelInfo:
        return await kernels.register_build(request)

    @router.post("/pull", status_code=202)
    async def pull(request: KernelPullRequest) -> Operation:
        from banger.kernels.pull import parse_source

        parse_source(request.source)

        async def body(op: OpHandle) -> None:
            await kernels.pull(request.source, request.name, op)

        return await stack.vms.ops.start("kernel.pull", request.source, body)

    @router.get("/{ref}")
    async def show(ref: str) -> KernelInfo:
        return await kernels.show(ref)

    @router.delete("/{ref}")
    async def remove(ref: str) -> KernelInfo:
        return await kernels.remove(ref)

    return router
