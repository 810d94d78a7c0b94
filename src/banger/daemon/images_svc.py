"""ImageService: the daemon's side of ``banger image …``.

Like kernels, an image is a published directory ``images/<id>/``
(:mod:`banger.images.publish`) plus a store row with the same id.

What the owner's daemon can do without root:

- ``register`` a banger image directory (``image.json`` + ``rootfs.ext4`` +
  ``work-seed.ext4``, e.g. a build from another machine or the test cache):
  both files are copied sparsely and published under a new id;
- ``register`` a banger-finalized ext4 file (it has ``/sbin/banger-fast-init``
  and the sshd drop-in): copied, and given an empty work seed built without
  root (``mkfs.ext4`` of an empty tree, then a debugfs batch makes ``/`` 0755
  root:root with ``.ssh``/``.banger`` 0700 and ``.hushlogin``).

Anything that needs root (``image build`` with mmdebstrap; finalizing a plain
rootfs) goes through the helper's ``image_build`` op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banger.api_models import ImageInfo
from banger.config import Config
from banger.daemon.artifacts_svc import DEFAULT_KEY, ArtifactService
from banger.daemon.cache_gate import CacheGate
from banger.daemon.ops import OpHandle
from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit
from banger.disk.workdisk import sparse_copy
from banger.errors import BangerError, InvalidArgument, NotFound
from banger.helper.client import HelperClient
from banger.images.common import check_image_name
from banger.images.distro import parse_distro_ref
from banger.images.ext4build import make_ext4_from_tree
from banger.images.finalize import FAST_INIT_PATH
from banger.images.publish import (
    META_NAME,
    ImageEntry,
    ImageMeta,
    check_name_free,
    publish_image,
    read_image,
)
from banger.images.register import source_kind
from banger.images.workseed import WORK_LABEL, WORK_MAX_GROW, WORK_SEED_SIZE
from banger.paths import Paths
from banger.rmtree import discard_tree
from banger.store import ImageRecord, Store

log = logging.getLogger(__name__)

#: The root-only stage the helper builds in (banger.helper.rootstage) and an image id.
_HELPER_STAGE = re.compile(r"root-[0-9a-f]{8}")
_IMAGE_ID = re.compile(r"[0-9a-f]{12}")

#: Files a banger-finalized rootfs always has.
FINALIZED_MARKERS = (FAST_INIT_PATH, "/etc/ssh/sshd_config.d/10-banger.conf")
#: An image build downloads a few hundred MB and runs package scripts.
BUILD_TIMEOUT = 3600.0
#: How often the build's progress file is read back while the helper works.
PROGRESS_INTERVAL = 0.5


def empty_work_seed(out: Path, stage: Path) -> None:
    """A work seed with no skeleton, made without root (see the module docstring)."""
    tree = stage / "empty-home"
    tree.mkdir()
    make_ext4_from_tree(tree, out, WORK_SEED_SIZE, WORK_LABEL, max_grow_bytes=WORK_MAX_GROW)
    edit = Ext4Edit()
    edit.ensure_root_dir_mode(0o755, 0, 0)
    edit.mkdir("/.ssh", 0o700)
    edit.mkdir("/.banger", 0o700)
    edit.write_bytes("/.hushlogin", b"", 0o644, stage_dir=stage)
    ext4.apply(out, edit, stage_dir=stage)


class ImageService(ArtifactService[ImageRecord, ImageInfo]):
    noun = "image"
    a_noun = "an image"

    def __init__(
        self,
        paths: Paths,
        config: Config,
        store: Store,
        publish_lock: asyncio.Lock,
        helper: Callable[[float | None], HelperClient],
    ) -> None:
        super().__init__(paths, config, store, publish_lock)
        self._helper = helper
        #: Pulls share the OCI cache; `image prune` takes it alone (daemon/cache_gate.py).
        self.cache_gate = CacheGate()

    # -- rows ------------------------------------------------------------------------
    def _rows(self) -> list[ImageRecord]:
        return self.store.list_images()

    def _row(self, artifact_id: str) -> ImageRecord:
        return self.store.get_image(artifact_id)

    def _update_meta(self, artifact_id: str, meta: dict[str, Any]) -> None:
        self.store.update_image(artifact_id, meta=meta)

    def _delete_row(self, artifact_id: str) -> None:
        self.store.delete_image(artifact_id)

    def _remove_directory(self, artifact_id: str) -> None:
        target = self.paths.image_dir(artifact_id)
        if target.exists():
            target.chmod(0o700)
            discard_tree(target)

    def _configured_default(self) -> str:
        return self.config.vm.image

    # -- reading ---------------------------------------------------------------------
    def entry(self, record: ImageRecord) -> ImageEntry:
        return read_image(self.paths.image_dir(record.id))

    def info(self, record: ImageRecord) -> ImageInfo:
        entry = self.entry(record)
        users = [vm.name for vm in self.store.list_vms() if vm.image_id == record.id]
        return ImageInfo(
            id=record.id,
            name=record.name,
            source=record.source,
            description=entry.description,
            size=record.size,
            rootfs=str(entry.rootfs),
            work_seed=str(entry.work_seed),
            init_modes=list(entry.init_modes),
            default=bool(record.meta.get(DEFAULT_KEY)),
            created_at=record.created_at,
            used_by=users,
            digest=record.digest,
            rootfs_size=entry.rootfs_size,
            work_seed_size=entry.work_seed_size,
            config=dict(entry.config),
        )

    def find(self, ref: str) -> ImageRecord | None:
        """An image by name or id; a distro ref ``debian:<suite>`` finds its build."""
        records = self.store.list_images()
        for record in records:
            if ref in (record.name, record.id):
                return record
        if ref.startswith("debian:"):
            name = parse_distro_ref(ref).image_name
            for record in records:
                if record.name == name or record.source == ref:
                    return record
        return None

    def get(self, ref: str) -> ImageRecord:
        record = self.find(ref)
        if record is None:
            raise NotFound(
                f"image: no image named {ref!r}",
                hint="`banger image list` shows them; `banger image build debian:bookworm` "
                "builds one",
            )
        return record

    async def show(self, ref: str) -> ImageInfo:
        return await asyncio.to_thread(lambda: self.info(self.get(ref)))

    # -- resolving for a VM ------------------------------------------------------------
    def resolve_now(self, ref: str | None) -> ImageRecord | None:
        """The image for a new VM if it exists; None when the distro ref must be built."""
        if ref is not None:
            record = self.find(ref)
            if record is None and not ref.startswith("debian:"):
                raise NotFound(
                    f"image: no image named {ref!r}", hint="`banger image list` shows them"
                )
            if record is None:
                parse_distro_ref(ref)  # a malformed ref is a 400 now, not a failed build later
            return record
        return self.default_record()

    async def ensure(self, ref: str | None, op: OpHandle) -> ImageRecord:
        record = await asyncio.to_thread(self.resolve_now, ref)
        if record is not None:
            return record
        wanted = ref or self.config.vm.image
        await op.event("notice", f"image {wanted} is not here yet: building it (a few minutes)")
        info = await self.build(wanted, None, op)
        return await asyncio.to_thread(self.store.get_image, info.id)

    # -- changing ------------------------------------------------------------------
    def _record(self, entry: ImageEntry) -> ImageRecord:
        return self._row_for_directory(
            lambda: self.store.create_image(
                id=entry.id,
                name=entry.name,
                source=entry.source,
                size=entry.rootfs_allocated,
                meta={"description": entry.description, "init_modes": list(entry.init_modes)},
            ),
            entry.path,
        )

    def _staging(self) -> Path:
        self.paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stage = self.paths.tmp_dir / f"register-{secrets.token_hex(4)}"
        stage.mkdir(mode=0o700)
        return stage

    def _register(self, path: Path, name: str | None) -> ImageInfo:
        if not path.is_absolute():
            raise InvalidArgument(f"path: must be an absolute path: {path}")
        if name is not None:
            check_image_name(name)
        if path.is_dir() and (path / META_NAME).is_file():
            given = read_image(path)
            final_name = check_name_free(self.paths.images_dir, name or given.name)
            self._check_row_free(final_name)
            stage = self._staging()
            try:
                sparse_copy(given.rootfs, stage / "rootfs.ext4")
                sparse_copy(given.work_seed, stage / "work-seed.ext4")
                for f in ("rootfs.ext4", "work-seed.ext4"):
                    (stage / f).chmod(0o644)
                meta = ImageMeta(source=f"image:{path}", description=given.description)
                entry = self._publish(stage, final_name, meta)
            finally:
                discard_tree(stage)
            return self.info(self._record(entry))
        kind = source_kind(path)
        if kind != "ext4" or not all(ext4.exists(path, m) for m in FINALIZED_MARKERS):
            raise InvalidArgument(
                f"path: {path} is a plain {kind} root filesystem; finalizing it needs root",
                hint="register a banger image directory or a banger-finalized ext4 file, "
                "or build one with `banger image build debian:bookworm`",
            )
        final_name = check_name_free(self.paths.images_dir, name or _name_from(path))
        self._check_row_free(final_name)
        stage = self._staging()
        try:
            sparse_copy(path, stage / "rootfs.ext4")
            (stage / "rootfs.ext4").chmod(0o644)
            empty_work_seed(stage / "work-seed.ext4", stage)
            entry = self._publish(stage, final_name, ImageMeta(source=f"ext4:{path}"))
        finally:
            discard_tree(stage)
        return self.info(self._record(entry))

    def _publish(self, stage: Path, name: str, meta: ImageMeta) -> ImageEntry:
        return publish_image(
            self.paths.images_dir,
            self.paths.tmp_dir,
            name,
            stage / "rootfs.ext4",
            stage / "work-seed.ext4",
            meta,
        )

    async def register(self, path: str, name: str | None) -> ImageInfo:
        async with self.publish_lock:
            return await asyncio.to_thread(self._register, Path(path), name)

    async def build(self, ref: str, name: str | None, op: OpHandle) -> ImageInfo:
        """Build a distro image through the root helper's ``image_build`` op."""
        distro = parse_distro_ref(ref)
        final_name = check_image_name(name or distro.image_name)
        await op.stage("build_image", f"building image {distro} (root helper, mmdebstrap)")
        async with self.publish_lock:
            await asyncio.to_thread(check_name_free, self.paths.images_dir, final_name)
            await asyncio.to_thread(self._check_row_free, final_name)
            out = await asyncio.to_thread(self._staging)
            try:
                progress = asyncio.create_task(_relay_progress(out / "progress.log", op))
                try:
                    result = await self._helper(BUILD_TIMEOUT).acall(
                        "image_build",
                        suite=distro.suite,
                        name=final_name,
                        out_dir=str(out),
                        mirror=self.config.images.debian_mirror,
                    )
                finally:
                    progress.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await progress
                entry = await asyncio.to_thread(self.adopt_from_helper, out, result)
            finally:
                await asyncio.to_thread(_remove_build_stage, out)
            info = await asyncio.to_thread(lambda: self.info(self._record(entry)))
        await op.event("info", f"image {info.name} ready", {"image": info.id})
        return info

    def adopt_from_helper(self, out: Path, result: dict[str, Any]) -> ImageEntry:
        """Adopt the image an ``image_build``/``image_pull`` reply names: it is in the
        root-only stage the helper made in ``out`` and handed to us at the end."""
        stage, image_id = str(result.get("dir")), str(result.get("id"))
        if not _HELPER_STAGE.fullmatch(stage) or not _IMAGE_ID.fullmatch(image_id):
            raise BangerError(f"the helper's reply names no image: {result}")
        return self._adopt(out / stage / "images" / image_id)

    def _adopt(self, built: Path) -> ImageEntry:
        """Move the helper's published image (chowned to us) into ``images/``."""
        entry = read_image(built)
        if built.stat().st_uid != os.getuid():
            raise InvalidArgument(f"the helper's image {built} is not owned by this user")
        self.paths.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self.paths.image_dir(entry.id)
        built.rename(final)
        return read_image(final)


def _remove_build_stage(out: Path) -> None:
    """Remove a build's staging directory; say so when something in it is not ours to remove.

    The helper removes its own (root-owned) leftovers of a failed build, so
    anything still here is a bug worth a log line, not a silent leak.
    """
    problem = discard_tree(out)
    if problem is not None:
        log.warning("image build: staging directory left behind: %s", problem)


def _name_from(path: Path) -> str:
    stem = path.name.removesuffix(".ext4").removesuffix(".img").lower()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
    return check_image_name(cleaned[:63] or "image")


async def _relay_progress(path: Path, op: OpHandle) -> None:
    """Forward lines the helper appends to ``path`` as progress events.

    The helper answers one request with one reply, so a long build reports
    through this file instead; reading it back every half second is the price.
    """
    offset = 0
    pending = b""
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            continue
        offset += len(data)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text:
                await op.event("progress", text[:300])
