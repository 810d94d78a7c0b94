"""``/v1/vms``, ``/v1/images``, ``/v1/kernels``: thin handlers over the VM stack."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from banger.api_models import (
    DefaultRequest,
    ImageBuildRequest,
    ImageInfo,
    ImageRegisterRequest,
    KernelBuildRegisterRequest,
    KernelImportRequest,
    KernelInfo,
    KernelPullRequest,
    Operation,
    SSHInfo,
    VMCreateRequest,
    VMDetail,
    VMStopRequest,
)
from banger.daemon.ops import OpHandle
from banger.daemon.vms.stack import VMStack


def vm_router(stack: VMStack) -> APIRouter:
    router = APIRouter(prefix="/v1/vms", tags=["vms"])
    vms = stack.vms

    @router.get("")
    async def list_vms() -> list[VMDetail]:
        return await asyncio.to_thread(lambda: [vms.detail(v) for v in vms.store.list_vms()])

    @router.post("", status_code=202)
    async def create(request: VMCreateRequest) -> Operation:
        """Create (and by default start) a VM; follow the returned operation."""
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


def image_router(stack: VMStack) -> APIRouter:
    router = APIRouter(prefix="/v1/images", tags=["images"])
    images = stack.images

    @router.get("")
    async def list_images() -> list[ImageInfo]:
        return await images.list()

    @router.get("/default")
    async def get_default() -> ImageInfo | None:
        return await images.get_default()

    @router.put("/default")
    async def set_default(request: DefaultRequest) -> ImageInfo:
        return await images.set_default(request.name)

    @router.post("/register")
    async def register(request: ImageRegisterRequest) -> ImageInfo:
        return await images.register(request.path, request.name)

    @router.post("/build", status_code=202)
    async def build(request: ImageBuildRequest) -> Operation:
        from banger.images.distro import parse_distro_ref

        parse_distro_ref(request.ref)  # a bad ref is a 400 before the operation starts

        async def body(op: OpHandle) -> None:
            await images.build(request.ref, request.name, op)

        return await stack.vms.ops.start("image.build", request.ref, body)

    @router.get("/{ref}")
    async def show(ref: str) -> ImageInfo:
        return await images.show(ref)

    @router.delete("/{ref}")
    async def remove(ref: str) -> ImageInfo:
        return await images.remove(ref)

    from banger.daemon.api.images import image_transfer_router

    router.include_router(image_transfer_router(stack))
    return router


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
