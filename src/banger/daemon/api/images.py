"""``/v1/images``: the image store over the API.

Listing, showing, the default, registering and removing are immediate;
building, pulling (an OCI image or a bundle), promoting a stopped VM's disks and
exporting a bundle start an operation (202) whose events carry progress and
whose last ``info`` event names the result.
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.api_models import (
    DefaultRequest,
    ImageBuildRequest,
    ImageExportRequest,
    ImageInfo,
    ImagePromoteRequest,
    ImagePruneRequest,
    ImagePruneResult,
    ImagePullRequest,
    ImageRegisterRequest,
    Operation,
)
from banger.daemon.ops import OpHandle
from banger.daemon.vms.stack import VMStack
from banger.errors import InvalidArgument
from banger.images.common import check_image_name


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

    @router.post("/pull", status_code=202)
    async def pull(request: ImagePullRequest) -> Operation:
        """Pull an OCI image or a bundle; follow the returned operation."""
        from banger.daemon import images_pull

        images_pull.check_pull_ref(request.ref)  # a 400 before the operation starts
        if request.name is not None:
            check_image_name(request.name)

        async def body(op: OpHandle) -> None:
            await images_pull.pull(images, request.ref, request.name, op)

        return await stack.vms.ops.start("image.pull", request.ref, body)

    @router.post("/promote", status_code=202)
    async def promote(request: ImagePromoteRequest) -> Operation:
        """A stopped VM's disks become a new image."""
        from banger.daemon import images_promote

        check_image_name(request.name)
        if request.include_synced and not request.with_work_disk:
            raise InvalidArgument("include_synced: only meaningful with with_work_disk")

        async def body(op: OpHandle) -> None:
            await images_promote.promote(
                stack,
                request.vm,
                request.name,
                request.with_work_disk,
                op,
                include_synced=request.include_synced,
            )

        return await stack.vms.ops.start("image.promote", request.vm, body)

    @router.post("/prune")
    async def prune(request: ImagePruneRequest) -> ImagePruneResult:
        """Remove the OCI cache's blobs no image needs (waits for running pulls)."""
        from banger.daemon import images_prune

        return await images_prune.prune(images, dry_run=request.dry_run)

    @router.post("/{ref}/export", status_code=202)
    async def export(ref: str, request: ImageExportRequest) -> Operation:
        """Write an image as a single-file bundle."""
        from banger.daemon import images_pull

        async def body(op: OpHandle) -> None:
            await images_pull.export(images, ref, request.output, op)

        return await stack.vms.ops.start("image.export", ref, body)

    return router
