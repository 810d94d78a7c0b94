"""How much a pull may unpack: a cap, and the room the filesystem has.

A layer is a compressed stream: a few kilobytes of gzip can declare a file
of many gigabytes of zeros. Flattening writes every byte a layer declares,
so without a bound a hostile (or simply huge) image fills the owner's disk.
Before the first layer, :meth:`UnpackBudget.measure` takes the free space of
the filesystem the tree is written on; every entry is charged its declared
size (from its tar header, before a byte of it is written) plus a block for
its inode, and flattening stops at the first entry that would go over:

- the cap (``images.max_unpacked_size``, default 64 GiB): the image itself
  is refused, naming the layer and the entry (:class:`ImageTooLarge`, bad
  input: exit 2);
- half the free space at the start (the tree, then its ext4 image of about
  the same size, are both on that filesystem until the tree is removed):
  :class:`banger.images.build.DiskFull` names the filesystem and what the
  image needed, before the disk is full rather than after.

Charges only add up: a file an upper layer replaces or whites out is still
counted. That overestimates images whose layers rewrite big files, never
the other way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from banger.diskfull import DiskFull, mount_point
from banger.errors import BangerError

GiB = 1024**3
DEFAULT_MAX_UNPACKED = 64 * GiB
#: What an entry costs besides its data: an inode and (for a directory) a block.
ENTRY_COST = 4096


class ImageTooLarge(BangerError):
    """The image unpacks to more than the configured cap: refused as bad input."""

    http_status = 400
    exit_code = 2


def human(size: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


@dataclass
class UnpackBudget:
    cap: int
    room: int
    where: Path
    used: int = 0

    @classmethod
    def measure(cls, tree: Path, cap: int = DEFAULT_MAX_UNPACKED) -> UnpackBudget:
        """The budget for a tree about to be written at ``tree`` (its parent exists)."""
        st = os.statvfs(tree)
        return cls(cap=cap, room=st.f_bavail * st.f_frsize // 2, where=tree)

    def charge(self, digest: str, entry: str, size: int) -> None:
        """Count ``size`` bytes of ``entry`` (layer ``digest``); raise before going over."""
        self.used += size + ENTRY_COST
        if self.used > self.cap:
            raise ImageTooLarge(
                f"layer {digest} is refused: entry {entry!r} brings the unpacked image over"
                f" the {human(self.cap)} limit (images.max_unpacked_size)",
                hint="a layer that expands without bound is refused; raise"
                " images.max_unpacked_size in config.toml if the image is genuine",
            )
        if self.used > self.room:
            fs = mount_point(self.where)
            raise DiskFull(
                f"image pull stopped: layer {digest} entry {entry!r} brings the unpacked image"
                f" to {human(self.used)}, more than the space under {fs} allows"
                f" ({human(self.room * 2)} free; the tree and its ext4 image each need that much)",
                hint=f"free space on the filesystem holding {fs}, or point BANGER_HOME at a"
                " larger one",
            )
