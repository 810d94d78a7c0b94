"""``banger image promote VM NEW-NAME [--with-work-disk [--include-synced]]``, daemon side.

Two phases, following the lock order in :mod:`banger.daemon.vms.locks` (the
publication lock is never taken while a VM lock is held):

1. under the VM's lock: the VM must be stopped; its root disk is flattened
   and its work disk (or the image's work seed) copied into
   ``tmp/promote-<hex>/`` (:mod:`banger.images.promote`);
2. under the image publication lock: the name is checked again, the staged
   files are published by rename and recorded in one store transaction.

The staging directory is removed whatever happens (and by the next start's
cleanup if the daemon dies meanwhile).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

from banger.api_models import ImageInfo
from banger.daemon.images_pull import check_free, record_entry
from banger.daemon.ops import OpHandle
from banger.daemon.vms.stack import VMStack
from banger.errors import Conflict, InvalidArgument, NotFound
from banger.images.common import check_image_name
from banger.images.promote import flatten_root_disk, leave_out_synced, work_seed_from_disk
from banger.images.publish import ImageEntry, ImageMeta, publish_image
from banger.rmtree import discard_tree
from banger.store import VMRecord, VMState

PROMOTE_DIR_PREFIX = "promote-"
#: Root-disk strategies whose file the owner can read (dm snapshots live in the kernel).
ROOT_FILES = {"qcow2": "qcow2", "copy": "ext4", "reflink": "ext4"}


def _root_disk(stack: VMStack, vm: VMRecord) -> Path:
    suffix = ROOT_FILES.get(vm.root_strategy or "")
    if suffix is None:
        raise InvalidArgument(
            f"VM {vm.name}: its root disk ({vm.root_strategy or 'none'}) cannot be promoted",
            hint="promote works on VMs whose root disk is a qcow2 overlay or a sparse copy",
        )
    path = stack.vms.paths.vm_root_disk(vm.id, suffix)
    if not path.is_file():
        raise NotFound(f"VM {vm.name}: root disk {path} is missing")
    return path


def _stage(
    stack: VMStack, vm: VMRecord, source: ImageEntry, with_work_disk: bool, include_synced: bool
) -> tuple[Path, list[str]]:
    """The staged image files, and what file_sync/git identity wrote that was left out."""
    paths = stack.vms.paths
    left_out: list[str] = []
    paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stage = paths.tmp_dir / f"{PROMOTE_DIR_PREFIX}{secrets.token_hex(4)}"
    stage.mkdir(mode=0o700)
    try:
        flatten_root_disk(_root_disk(stack, vm), stage / "rootfs.ext4")
        if with_work_disk:
            work = paths.vm_work_disk(vm.id)
            if not work.is_file():
                raise NotFound(f"VM {vm.name}: work disk {work} is missing")
            work_seed_from_disk(work, stage / "work-seed.ext4")
            left_out = leave_out_synced(stage / "work-seed.ext4", include_synced=include_synced)
        else:
            shutil.copyfile(source.work_seed, stage / "work-seed.ext4")
    except BaseException:
        discard_tree(stage)
        raise
    return stage, left_out


async def promote(
    stack: VMStack,
    vm_ref: str,
    name: str,
    with_work_disk: bool,
    op: OpHandle,
    *,
    include_synced: bool = False,
) -> ImageInfo:
    vms, images = stack.vms, stack.images
    check_image_name(name)
    vm = await asyncio.to_thread(vms.store.resolve_vm, vm_ref)
    await asyncio.to_thread(check_free, images, name)
    await op.stage("copy_disks", f"flattening {vm.name}'s root disk")
    async with vms.locks.hold(vm.id):
        vm = await asyncio.to_thread(vms.store.get_vm, vm.id)
        if vms.alive(vm) or vm.state != VMState.STOPPED:
            raise Conflict(
                f"VM {vm.name} is {vm.state.value}; promote needs it stopped",
                hint=f"banger vm stop {vm.name}",
            )
        image_id = vm.image_id
        if image_id is None:
            raise NotFound(f"VM {vm.name} has no image recorded")
        source = await asyncio.to_thread(lambda: images.entry(images.store.get_image(image_id)))
        stage, left_out = await asyncio.to_thread(
            _stage, stack, vm, source, with_work_disk, include_synced
        )
    if left_out:
        shown = ", ".join("~" + p for p in left_out)
        await op.event(
            "notice",
            f"left out of the work seed what file_sync and git identity wrote: {shown}"
            " (--include-synced keeps them)",
            {"left_out": ["/root" + p for p in left_out]},
        )
    try:
        await op.stage("publish", f"publishing image {name}")
        what = "root and work disks" if with_work_disk else "root disk"
        meta = ImageMeta(
            source=f"vm:{vm.name}",
            description=f"promoted from VM {vm.name} ({what}); image {source.name}",
            config=dict(source.config),
        )
        async with images.publish_lock:

            def publish() -> ImageInfo:
                check_free(images, name)
                entry = publish_image(
                    images.paths.images_dir,
                    images.paths.tmp_dir,
                    name,
                    stage / "rootfs.ext4",
                    stage / "work-seed.ext4",
                    meta,
                )
                return images.info(record_entry(images, entry))

            info = await asyncio.to_thread(publish)
    finally:
        await asyncio.to_thread(discard_tree, stage)
    await op.event("info", f"image {info.name} ready", {"image": info.id, "name": info.name})
    return info
