"""ext4 images from a directory tree, with ``mkfs.ext4 -d`` into a sparse file.

No mount, no loop device: mke2fs copies the tree itself, keeping owners,
modes (setuid included) and extended attributes (``security.capability`` on
``ping``). It must run as root, or as a user who can read every file, since it
reads the files it copies; that is why image builds are helper operations.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument
from banger.images import tether

MiB = 1024 * 1024
BLOCK_SIZE = 4096
#: Default inode ratio of mke2fs's "default" usage type: one inode per 16 KiB.
INODE_RATIO = 16384
#: Headroom on top of the tree's allocated size: ext4 metadata, the journal
#: (up to 64 MiB at these sizes) and a little room to write.
SIZE_FACTOR = 1.3
SIZE_MARGIN = 64 * MiB

_LABEL_RE = re.compile(r"^[A-Za-z0-9._-]{1,16}$")


@dataclass(frozen=True)
class TreeUsage:
    """What a tree occupies: allocated bytes (hard links once) and inode count."""

    allocated: int
    inodes: int


def tree_usage(tree: Path) -> TreeUsage:
    """``du``-like: count allocated blocks of every inode in ``tree`` once."""
    seen: set[tuple[int, int]] = set()
    allocated = 0
    stack = [tree]
    root_stat = tree.lstat()
    allocated += root_stat.st_blocks * 512
    seen.add((root_stat.st_dev, root_stat.st_ino))
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                allocated += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
    return TreeUsage(allocated, len(seen))


def filesystem_size(requested: int, usage: TreeUsage) -> int:
    """max(requested, allocated * 1.3 + 64 MiB), rounded up to whole MiB."""
    needed = math.ceil(usage.allocated * SIZE_FACTOR) + SIZE_MARGIN
    size = max(requested, needed)
    return math.ceil(size / MiB) * MiB


def inode_count(size: int, usage: TreeUsage) -> int | None:
    """An explicit inode count when the default ratio would leave too few, else None."""
    needed = math.ceil(usage.inodes * SIZE_FACTOR) + 1024
    return needed if size // INODE_RATIO < needed else None


def check_label(label: str) -> str:
    if not _LABEL_RE.fullmatch(label):
        raise InvalidArgument(
            f"filesystem label {label!r} is invalid: 1-16 letters, digits, '.', '_', '-'"
        )
    return label


def mkfs_ext4_argv(
    tree: Path,
    out: Path,
    *,
    label: str,
    inodes: int | None = None,
    max_grow_bytes: int | None = None,
) -> list[str]:
    """The mkfs.ext4 command line that fills ``out`` (already sized) from ``tree``."""
    argv = [
        "mkfs.ext4",
        "-q",
        "-F",
        # Fixed geometry whatever the size (mke2fs would pick 1 KiB blocks
        # and a denser inode table for "small" filesystems under 512 MiB).
        "-T",
        "default",
        "-b",
        str(BLOCK_SIZE),
        "-I",
        "256",
        # Everything in the guest runs as root: reserved blocks protect nothing.
        "-m",
        "0",
        "-L",
        check_label(label),
    ]
    if inodes is not None:
        argv += ["-N", str(inodes)]
    if max_grow_bytes is not None:
        # Reserve group descriptor blocks so resize2fs can grow it this far.
        argv += ["-E", f"resize={max_grow_bytes // BLOCK_SIZE}"]
    argv += ["-d", str(tree), str(out)]
    return argv


def make_ext4_from_tree(
    tree: Path,
    out: Path,
    size_bytes: int,
    label: str,
    *,
    max_grow_bytes: int | None = None,
) -> int:
    """Write an ext4 image of ``tree`` to ``out`` (a new sparse file); return its size.

    The size is ``size_bytes`` or more if the tree needs it. The result is
    checked with ``e2fsck -fn``; on any failure ``out`` is removed.
    """
    if not tree.is_dir():
        raise InvalidArgument(f"image tree {tree} is not a directory")
    if out.exists():
        raise InvalidArgument(f"{out} exists already")
    usage = tree_usage(tree)
    size = filesystem_size(size_bytes, usage)
    argv = mkfs_ext4_argv(
        tree, out, label=label, inodes=inode_count(size, usage), max_grow_bytes=max_grow_bytes
    )
    try:
        with open(out, "xb") as f:
            os.truncate(f.fileno(), size)
        tether.run(argv)  # dies with a killed helper instead of writing on into its tmp/
        check_ext4(out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return size


def check_ext4(image: Path) -> None:
    """``e2fsck -fn``: a read-only full check; any problem raises CommandError."""
    tether.run(["e2fsck", "-fn", str(image)])
