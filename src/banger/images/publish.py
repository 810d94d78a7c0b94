"""Publishing an image: build the directory under tmp, rename it into place whole.

An image directory is ``images/<id>/`` holding ``rootfs.ext4``,
``work-seed.ext4`` and ``image.json``. It is assembled under the tmp
directory (same filesystem as the images directory), every file fsynced,
then renamed in one step; a crash leaves either nothing under ``images/`` or
a whole image (leftovers under tmp are removed by startup reconciliation).

No sha256 of the rootfs is stored: hashing a multi-GiB sparse file costs
seconds on every build and protects against nothing the filesystem does not
already (published files are read-only and never rewritten). ``image.json``
records sizes instead; bundles/exports compute digests where they leave the
machine.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.disk import durable
from banger.errors import BangerError, Conflict, InvalidArgument
from banger.images.common import check_image_name
from banger.images.finalize import FINALIZE_VERSION, INIT_MODES
from banger.rmtree import discard_tree

ROOTFS_NAME = "rootfs.ext4"
WORK_SEED_NAME = "work-seed.ext4"
META_NAME = "image.json"
META_SCHEMA = 1


@dataclass(frozen=True)
class ImageMeta:
    """What the caller knows about where an image came from."""

    source: str  # "debian:bookworm", "dir:/srv/rootfs", "tar:/tmp/x.tar", "ext4:/x.ext4"
    description: str = ""
    #: OCI process config the image author set (``Env``, ``WorkingDir``, ``User``);
    #: recorded for ``image show``, empty for images that did not come from OCI.
    config: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ImageEntry:
    """A published image, as recorded in ``image.json``."""

    id: str
    name: str
    source: str
    description: str
    created_at: str  # ISO 8601, UTC
    rootfs_size: int  # apparent bytes
    rootfs_allocated: int  # bytes on disk (sparse)
    work_seed_size: int
    finalize_version: int
    init_modes: tuple[str, ...]
    path: Path
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS_NAME

    @property
    def work_seed(self) -> Path:
        return self.path / WORK_SEED_NAME

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["init_modes"] = list(self.init_modes)
        data["schema"] = META_SCHEMA
        return data


def read_image(path: Path) -> ImageEntry:
    """The entry of a published image directory."""
    try:
        data = json.loads((path / META_NAME).read_text())
        return ImageEntry(
            id=str(data["id"]),
            name=str(data["name"]),
            source=str(data["source"]),
            description=str(data.get("description", "")),
            created_at=str(data["created_at"]),
            rootfs_size=int(data["rootfs_size"]),
            rootfs_allocated=int(data["rootfs_allocated"]),
            work_seed_size=int(data["work_seed_size"]),
            finalize_version=int(data["finalize_version"]),
            init_modes=tuple(str(m) for m in data["init_modes"]),
            path=path,
            config=dict(data.get("config") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BangerError(
            f"image directory {path} has no valid {META_NAME}: {exc}",
            hint="remove the directory; `banger image build` or `register` recreates it",
        ) from exc


def list_images(images_dir: Path) -> list[ImageEntry]:
    if not images_dir.is_dir():
        return []
    out = []
    for child in sorted(images_dir.iterdir()):
        if (child / META_NAME).is_file():
            out.append(read_image(child))
    return out


def check_name_free(images_dir: Path, name: str) -> str:
    """Raise :class:`Conflict` if an image called ``name`` is published already."""
    if any(entry.name == name for entry in list_images(images_dir)):
        raise Conflict(
            f"an image named {name!r} exists already",
            hint=f"remove it first (banger image rm {name}) or pick another name",
        )
    return name


def new_image_id() -> str:
    return secrets.token_hex(6)


def _move_into(src: Path, dst: Path) -> None:
    """Rename when on one filesystem; else a sparse-aware copy, then remove src."""
    try:
        src.rename(dst)
    except OSError:
        from banger import proc

        proc.run(["cp", "--sparse=always", "--preserve=mode", str(src), str(dst)])
        src.unlink()


def publish_image(
    images_dir: Path,
    tmp_dir: Path,
    name: str,
    rootfs: Path,
    work_seed: Path,
    meta: ImageMeta,
    *,
    image_id: str | None = None,
    owner: tuple[int, int] | None = None,
) -> ImageEntry:
    """Move ``rootfs`` and ``work_seed`` into a new image directory, atomically.

    Raises :class:`Conflict` if an image called ``name`` is published already.
    On any failure nothing appears under ``images_dir`` and the staging
    directory is removed (the input files may be consumed). ``owner``
    (uid, gid) is given when root publishes for the owner's daemon, which
    must be able to delete the image later.
    """
    check_image_name(name)
    for label, path in (("rootfs", rootfs), ("work seed", work_seed)):
        if not path.is_file():
            raise InvalidArgument(f"{label} {path} is not a file")
    check_name_free(images_dir, name)
    image_id = image_id or new_image_id()
    images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = tmp_dir / f"image-{image_id}.partial"
    final = images_dir / image_id
    if final.exists():
        raise Conflict(f"image directory {final} exists already")
    staging.mkdir(mode=0o755)
    try:
        _move_into(rootfs, staging / ROOTFS_NAME)
        _move_into(work_seed, staging / WORK_SEED_NAME)
        rootfs_stat = (staging / ROOTFS_NAME).stat()
        entry = ImageEntry(
            id=image_id,
            name=name,
            source=meta.source,
            description=meta.description,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            rootfs_size=rootfs_stat.st_size,
            rootfs_allocated=rootfs_stat.st_blocks * 512,
            work_seed_size=(staging / WORK_SEED_NAME).stat().st_size,
            finalize_version=FINALIZE_VERSION,
            init_modes=INIT_MODES,
            path=final,
            config=dict(meta.config),
        )
        (staging / META_NAME).write_text(json.dumps(entry.to_json(), indent=2) + "\n")
        # Published images are never written again: read-only makes a stray
        # write (a VMM opening the base read-write) fail loudly.
        for file in (ROOTFS_NAME, WORK_SEED_NAME, META_NAME):
            (staging / file).chmod(0o444)
            durable.fsync_path(staging / file)
        if owner is not None:
            for path in (staging, *(staging / f for f in (ROOTFS_NAME, WORK_SEED_NAME, META_NAME))):
                os.chown(path, *owner)
        durable.publish_dir(staging, final)
    except BaseException:
        discard_tree(staging)
        raise
    return entry
