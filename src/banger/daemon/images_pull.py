"""``banger image pull`` and ``banger image export`` on the daemon's side.

Pull of an OCI reference, in two halves:

1. ``download`` (as the owner, no root): skopeo fetches the blobs into the
   owner's shared layer cache (``cache_dir/oci``, content addressed; two
   pulls of one image download once) with the owner's own registry
   credentials;
2. ``flatten`` (root, banger-helper's ``image_pull`` op,
   :mod:`banger.helper.image_pull`): the layers are hard-linked into an
   empty ``tmp/pull-<hex>/layers/``; the helper flattens, finalizes (a foreign
   image gets systemd/sshd/tmux from its package manager) and writes the ext4
   images there, hands them to the owner, and the daemon renames the image
   into ``images/`` and records it, under the image publication lock.

``bundle:PATH`` / ``bundle:URL`` needs no root: the bundle is verified and
published by :func:`banger.images.bundle.import_bundle` in the daemon.

Export writes a bundle of a published image to a file the owner names.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
from pathlib import Path

from banger.api_models import ImageInfo
from banger.daemon.images_svc import ImageService, _relay_progress
from banger.daemon.ops import OpHandle
from banger.daemon.progress import ThreadProgress
from banger.errors import InvalidArgument
from banger.images.bundle import export_bundle
from banger.images.common import check_image_name
from banger.images.oci.layers import FetchedImage
from banger.images.oci.pull import BUNDLE_PREFIX, pull_bundle, pull_oci, source_of
from banger.images.oci.ref import image_name_for, parse_ref
from banger.images.publish import ImageEntry, check_name_free
from banger.rmtree import discard_tree
from banger.store import ImageRecord

#: Flatten + finalize (+ apt in a chroot for a foreign image) + mkfs.
PULL_TIMEOUT = 3600.0
PULL_DIR_PREFIX = "pull-"
LAYERS_DIR = "layers"
DAEMON_LOCK = "daemon.lock"


def digest_of_source(source: str) -> str | None:
    """``…@sha256:<hex>`` → ``sha256:<hex>`` (what an OCI pull records)."""
    _, at, digest = source.rpartition("@")
    return digest if at and digest.startswith("sha256:") else None


def record_entry(images: ImageService, entry: ImageEntry) -> ImageRecord:
    """The store row of a just-published image; the directory goes if the row cannot."""
    try:
        return images.store.create_image(
            id=entry.id,
            name=entry.name,
            source=entry.source,
            digest=digest_of_source(entry.source),
            size=entry.rootfs_allocated,
            meta={"description": entry.description, "init_modes": list(entry.init_modes)},
        )
    except BaseException:
        discard_tree(entry.path)
        raise


def check_free(images: ImageService, name: str) -> str:
    check_name_free(images.paths.images_dir, name)
    if any(r.name == name for r in images.store.list_images()):
        raise InvalidArgument(
            f"name: an image named {name!r} exists already",
            hint=f"remove it first (banger image rm {name}) or pick another name",
        )
    return name


def check_pull_ref(ref: str) -> None:
    """A 400 before the operation starts: the reference must parse."""
    if ref.startswith(BUNDLE_PREFIX):
        location = ref.removeprefix(BUNDLE_PREFIX)
        if not location.startswith(("http://", "https://", "/")):
            raise InvalidArgument(
                f"ref: bundle location {location!r} must be an absolute path or an http(s) URL"
            )
        return
    parse_ref(ref)


def _link_layers(fetched: FetchedImage, layers_dir: Path) -> None:
    """Cached blobs into the helper's input directory: hard links, else copies."""
    layers_dir.mkdir(mode=0o755)
    for digest, blob in fetched.layers():
        dest = layers_dir / digest.removeprefix("sha256:")
        if dest.exists():
            continue  # one layer used twice in one image
        try:
            os.link(blob, dest)
        except OSError:
            shutil.copyfile(blob, dest)


def _new_pull_dir(images: ImageService) -> Path:
    images.paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = images.paths.tmp_dir / f"{PULL_DIR_PREFIX}{secrets.token_hex(4)}"
    # 0711: root (the helper) reads it anyway; nobody else may list it.
    out.mkdir(mode=0o711)
    return out


async def pull(images: ImageService, ref: str, name: str | None, op: OpHandle) -> ImageInfo:
    """Pull ``ref`` (OCI reference or ``bundle:…``) into the store; the new image's info."""
    loop = asyncio.get_running_loop()
    progress = ThreadProgress(op, loop)
    if ref.startswith(BUNDLE_PREFIX):
        info = await _pull_bundle(images, ref.removeprefix(BUNDLE_PREFIX), name, op, progress)
    else:
        parsed = parse_ref(ref)
        final_name = check_image_name(name or image_name_for(parsed))
        await asyncio.to_thread(check_free, images, final_name)
        # Shared with other pulls, never with `image prune`: until the row below
        # exists, no image references the blobs this pull brings into the cache.
        async with images.cache_gate.shared():
            await op.stage("download", f"fetching {parsed} into the layer cache")
            fetched = await asyncio.to_thread(
                lambda: pull_oci(parsed, paths=images.paths, progress=progress.line)
            )
            source = source_of(fetched, parsed)
            await op.stage("flatten", "flattening and finalizing the image (root helper)")
            async with images.publish_lock:
                await asyncio.to_thread(check_free, images, final_name)
                entry = await _flatten_in_helper(images, fetched, final_name, source, op)
                info = await asyncio.to_thread(lambda: images.info(record_entry(images, entry)))
    await op.event("info", f"image {info.name} ready", {"image": info.id, "name": info.name})
    return info


async def _pull_bundle(
    images: ImageService, location: str, name: str | None, op: OpHandle, progress: ThreadProgress
) -> ImageInfo:
    await op.stage("import", f"verifying and importing bundle {location}")
    if name is not None:
        await asyncio.to_thread(check_free, images, check_image_name(name))

    def work() -> ImageInfo:
        entry = pull_bundle(location, paths=images.paths, name=name, owner=None,
                            progress=progress.line)  # fmt: skip
        return images.info(record_entry(images, entry))

    async with images.publish_lock:
        return await asyncio.to_thread(work)


async def _flatten_in_helper(
    images: ImageService, fetched: FetchedImage, name: str, source: str, op: OpHandle
) -> ImageEntry:
    out = await asyncio.to_thread(_new_pull_dir, images)
    try:
        await asyncio.to_thread(_link_layers, fetched, out / LAYERS_DIR)
        # Held for as long as we wait: the helper drops the work if it is released.
        lock = open(out / DAEMON_LOCK, "w")  # noqa: SIM115 - held across awaits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            relay = asyncio.create_task(_relay_progress(out / "progress.log", op))
            try:
                result = await images._helper(PULL_TIMEOUT).acall(
                    "image_pull",
                    out_dir=str(out),
                    name=name,
                    source=source,
                    layers=[layer.digest for layer in fetched.manifest.layers],
                    config=fetched.config.to_json(),
                    max_unpacked=images.config.images.max_unpacked_size,
                )
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        finally:
            lock.close()
        return await asyncio.to_thread(images.adopt_from_helper, out, result)
    finally:
        await asyncio.to_thread(discard_tree, out)


async def export(images: ImageService, ref: str, out_file: str, op: OpHandle) -> Path:
    """Write image ``ref`` as a bundle to the absolute path ``out_file``."""
    path = Path(out_file)
    if not path.is_absolute():
        raise InvalidArgument(f"output: {out_file} must be an absolute path",
                              hint="the CLI makes it absolute")  # fmt: skip
    record = await asyncio.to_thread(images.get, ref)
    entry = await asyncio.to_thread(images.entry, record)
    await op.stage("export", f"writing {entry.name} to {path}")
    progress = ThreadProgress(op, asyncio.get_running_loop())
    written = await asyncio.to_thread(export_bundle, entry, path, progress.line)
    await op.event("info", f"wrote {written}", {"path": str(written), "image": record.id})
    return written
