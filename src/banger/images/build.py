"""Building and registering images, end to end (root only: a helper operation).

``build_image("debian:bookworm", ...)``: mmdebstrap a tree, finalize it, make
``rootfs.ext4`` and ``work-seed.ext4``, publish. Everything happens in one
build directory under ``paths.tmp_dir`` (same filesystem as the images
directory, so publication is a rename), removed whatever happens.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from banger.images.aptsources import resolve_debian_mirror
from banger.images.common import Progress, check_image_name, no_progress, require_root
from banger.images.distro import DEFAULT_PACKAGES, build_debian_rootfs, parse_distro_ref
from banger.images.ext4build import MiB, make_ext4_from_tree
from banger.images.finalize import finalize_tree
from banger.images.publish import (
    ImageEntry,
    ImageMeta,
    check_name_free,
    new_image_id,
    publish_image,
)
from banger.images.workseed import make_work_seed
from banger.paths import Paths

#: Apparent size of a new rootfs (sparse: only the tree's blocks are
#: allocated); room for the guest to install packages into its CoW root.
DEFAULT_ROOTFS_SIZE = 2048 * MiB
ROOTFS_LABEL = "banger-root"


def build_dir(paths: Paths, image_id: str) -> Path:
    paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = paths.tmp_dir / f"build-{image_id}"
    work.mkdir(mode=0o700)
    return work


def image_from_tree(
    tree: Path,
    work: Path,
    *,
    paths: Paths,
    name: str,
    meta: ImageMeta,
    image_id: str,
    rootfs_size: int = DEFAULT_ROOTFS_SIZE,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
) -> ImageEntry:
    """Finalize ``tree`` (inside ``work``), make both ext4 images and publish them."""
    progress("finalizing the image tree")
    finalize_tree(tree, home_out=work / "home")
    progress("writing rootfs.ext4")
    make_ext4_from_tree(tree, work / "rootfs.ext4", rootfs_size, ROOTFS_LABEL)
    progress("writing work-seed.ext4")
    make_work_seed(work / "home", work / "work-seed.ext4")
    progress(f"publishing image {name}")
    return publish_image(
        paths.images_dir,
        paths.tmp_dir,
        name,
        work / "rootfs.ext4",
        work / "work-seed.ext4",
        meta,
        image_id=image_id,
        owner=owner,
    )


def build_image(
    ref: str,
    *,
    paths: Paths,
    mirror: str | None,
    name: str | None = None,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    rootfs_size: int = DEFAULT_ROOTFS_SIZE,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
) -> ImageEntry:
    """Build and publish a distro image from ``ref`` (``debian:<suite>``). Needs root.

    ``mirror`` is ``images.debian_mirror`` from the config, or None to use
    the host's apt sources.
    """
    distro = parse_distro_ref(ref)
    name = check_name_free(paths.images_dir, check_image_name(name or distro.image_name))
    require_root(f"building image {ref}")
    resolved_mirror = resolve_debian_mirror(mirror)
    image_id = new_image_id()
    work = build_dir(paths, image_id)
    try:
        tree = build_debian_rootfs(
            distro.suite,
            work / "tree",
            mirror=resolved_mirror,
            packages=packages,
            progress=progress,
        )
        return image_from_tree(
            tree,
            work,
            paths=paths,
            name=name,
            meta=ImageMeta(source=str(distro), description=f"Debian {distro.suite} (mmdebstrap)"),
            image_id=image_id,
            rootfs_size=rootfs_size,
            owner=owner,
            progress=progress,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
