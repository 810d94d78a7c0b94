"""Building and registering images, end to end (root only: a helper operation).

``build_image("debian:bookworm", ...)``: mmdebstrap a tree, finalize it, make
``rootfs.ext4`` and ``work-seed.ext4``, publish. Everything happens in one
build directory under ``paths.tmp_dir`` (same filesystem as the images
directory, so publication is a rename), removed whatever happens.

A full disk is the likeliest way a build fails (a tree of a few hundred MB,
then an image of it), and each tool words it differently (apt, dpkg, mke2fs,
a Python write): :func:`disk_full_as_error` turns all of them into one
:class:`DiskFull` line naming the filesystem and the step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from banger import proc
from banger.diskfull import DiskFull, disk_full_is_said, mount_point
from banger.errors import CommandError
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
from banger.mountinfo import mounts_below
from banger.paths import Paths
from banger.rmtree import discard_tree

#: Apparent size of a new rootfs (sparse: only the tree's blocks are
#: allocated); room for the guest to install packages into its CoW root.
DEFAULT_ROOTFS_SIZE = 2048 * MiB
ROOTFS_LABEL = "banger-root"
log = logging.getLogger(__name__)


@contextmanager
def disk_full_as_error(step: str, where: Path) -> Iterator[None]:
    """Re-raise a disk-full failure of ``step`` (writing under ``where``) as :class:`DiskFull`.

    Anything else passes through unchanged: only a failure that says it found
    no space is worded as one.
    """
    try:
        yield
    except (OSError, CommandError) as exc:
        if not disk_full_is_said(exc):
            raise
        fs = mount_point(where)
        raise DiskFull(
            f"image build failed: no space left on device under {fs} ({step})",
            hint=f"free space on the filesystem holding {fs}, or point BANGER_HOME at a larger"
            " one; an image build needs about 1 GiB there while it runs",
        ) from exc


def mounts_under(directory: Path) -> list[Path]:
    """Mount points strictly inside ``directory``, deepest first."""
    # mountinfo has real names, never /proc/<pid>/fd
    found = [Path(p) for p in mounts_below(os.path.realpath(directory))]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_build_dir(work: Path) -> None:
    """Remove a build directory, never across a mount point.

    mmdebstrap (root mode) mounts /proc, an rbind of /sys and device nodes
    inside the tree and removes them itself; if it died first (killed, out of
    memory), they are still there, and a recursive delete would walk into the
    host's /sys. Detach them first (lazily: a process still inside must not
    keep the tree, and the mounts, around).
    """
    for point in mounts_under(work):
        proc.run(["umount", "--lazy", point], check=False)
    left = mounts_under(work)
    if left:
        log.warning("not removing %s: still mounted inside: %s", work, left)
        return
    discard_tree(work)


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
    with disk_full_as_error("finalizing the tree", work):
        finalize_tree(tree, home_out=work / "home")
    progress("writing rootfs.ext4")
    with disk_full_as_error("mkfs.ext4 rootfs.ext4", work):
        make_ext4_from_tree(tree, work / "rootfs.ext4", rootfs_size, ROOTFS_LABEL)
    progress("writing work-seed.ext4")
    with disk_full_as_error("mkfs.ext4 work-seed.ext4", work):
        make_work_seed(work / "home", work / "work-seed.ext4")
    progress(f"publishing image {name}")
    with disk_full_as_error("publishing", work):
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
    with disk_full_as_error("creating the build directory", paths.tmp_dir):
        work = build_dir(paths, image_id)
    try:
        with disk_full_as_error("mmdebstrap", work):
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
        remove_build_dir(work)
