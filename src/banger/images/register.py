"""``banger image register PATH``: a local rootfs becomes a banger image (root only).

PATH may be:

- a directory: copied with ``cp -a`` (owners, modes, xattrs, hard links),
  then finalized; the original is never modified;
- a tarball (any compression Python's tarfile reads): extracted member by
  member into a fresh tree with :func:`safe_extract`, then finalized;
- an ext4 image file: loop-mounted read-only (nosuid, nodev, noexec) and
  copied with ``cp -a``, then finalized and written into a fresh ext4 image
  like the others (the original is never modified).

Every kind ends as a tree that goes through the same finalize + mkfs +
publish path as a distro build, so every image honours the guest contract.
Known loss: tarballs do not carry extended attributes (file capabilities
such as ``ping``'s; the guest runs as root, which does not need them).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from banger import proc
from banger.errors import InvalidArgument, NotFound
from banger.images.build import DEFAULT_ROOTFS_SIZE, build_dir, image_from_tree
from banger.images.common import Progress, check_image_name, no_progress, require_root
from banger.images.publish import ImageEntry, ImageMeta, check_name_free, new_image_id
from banger.paths import Paths
from banger.rmtree import discard_tree, remove_tree

_EXT4_MAGIC_OFFSET = 1024 + 0x38
_EXT4_MAGIC = b"\x53\xef"


def source_kind(path: Path) -> str:
    """``dir``, ``tar`` or ``ext4``; anything else is an InvalidArgument."""
    if path.is_symlink():
        path = path.resolve()
    if path.is_dir():
        return "dir"
    if not path.is_file():
        raise NotFound(f"image source {path} does not exist")
    with open(path, "rb") as f:
        f.seek(_EXT4_MAGIC_OFFSET)
        if f.read(2) == _EXT4_MAGIC:
            return "ext4"
    if tarfile.is_tarfile(path):
        return "tar"
    raise InvalidArgument(
        f"image source {path} is not a directory, a tar archive or an ext4 image",
        hint="register a root filesystem tree, a tarball of one, or an ext4 image file",
    )


def _inside(dest: Path, name: str) -> Path:
    """The extraction target of member ``name``, refusing anything that leaves ``dest``."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise InvalidArgument(f"tar member {name!r} points outside the image tree")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        return dest  # "." (the archive's root directory)
    target = dest.joinpath(*parts)
    # A symlinked directory extracted earlier must not carry later members
    # out of the tree (realpath follows it on the host).
    real_dest = os.path.realpath(dest)
    if os.path.commonpath([os.path.realpath(target.parent), real_dest]) != real_dest:
        raise InvalidArgument(f"tar member {name!r} would be written through a symlink")
    return target


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a rootfs tarball into the new directory ``dest`` (as root).

    Member by member, each checked right before it is written (so a symlink
    extracted earlier cannot carry a later member out of the tree). Modes
    (setuid ``passwd``, sticky ``/tmp``) and numeric owners are kept: this is
    a root filesystem. Symlink targets are left alone: the guest resolves
    them inside its own root. Device nodes and fifos are skipped: ``/dev`` is
    a devtmpfs in the guest.
    """
    dest.mkdir(mode=0o755)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        # Reject an archive with bad names before writing anything.
        for member in members:
            _inside(dest, member.name)
            if member.islnk():
                _inside(dest, member.linkname)
        for member in members:
            if member.isdev() or member.isfifo():
                continue
            _inside(dest, member.name)
            if member.islnk():
                _inside(dest, member.linkname)
            tar.extract(member, dest, numeric_owner=True)  # checked just above


def copy_ext4_tree(image: Path, dest: Path, mountpoint: Path) -> None:
    """Copy every file of an ext4 image into the new directory ``dest``.

    A read-only loop mount plus ``cp -a`` (owners, modes, setuid, xattrs,
    hard links). ``debugfs rdump`` would avoid the mount but drops setuid
    bits (it chowns after chmod) and xattrs, which breaks ``passwd`` & co.
    """
    mountpoint.mkdir(mode=0o700)
    proc.run(["mount", "-t", "ext4", "-o", "loop,ro,nosuid,nodev,noexec", str(image),
              str(mountpoint)])  # fmt: skip
    try:
        proc.run(["cp", "-a", "--no-target-directory", str(mountpoint), str(dest)])
        lost = dest / "lost+found"
        if lost.is_dir() and not lost.is_symlink():
            remove_tree(lost)
    finally:
        proc.run(["umount", str(mountpoint)])
        mountpoint.rmdir()


def register_image(
    source: Path,
    *,
    paths: Paths,
    name: str,
    rootfs_size: int = DEFAULT_ROOTFS_SIZE,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
) -> ImageEntry:
    """Turn a local rootfs (directory, tarball or ext4 file) into a published image."""
    check_name_free(paths.images_dir, check_image_name(name))
    source = source.absolute()
    kind = source_kind(source)
    require_root(f"registering {source}")
    image_id = new_image_id()
    work = build_dir(paths, image_id)
    tree = work / "tree"
    try:
        progress(f"importing {kind} {source}")
        if kind == "dir":
            proc.run(["cp", "-a", "--no-target-directory", str(source), str(tree)])
        elif kind == "tar":
            safe_extract(source, tree)
        else:
            copy_ext4_tree(source, tree, work / "mnt")
        return image_from_tree(
            tree,
            work,
            paths=paths,
            name=name,
            meta=ImageMeta(source=f"{kind}:{source}"),
            image_id=image_id,
            rootfs_size=rootfs_size,
            owner=owner,
            progress=progress,
        )
    finally:
        discard_tree(work)
