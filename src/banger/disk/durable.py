"""Publish by rename after fsync, so a crash leaves the old name or the whole new thing.

A rename is atomic, but without an fsync first the new name can survive a
power loss pointing at data that never reached the disk; without an fsync of
the directory the rename itself can be lost. Used for per-VM disks (root
overlay, work disk) and, a whole directory at a time, for published images
and kernels (``images/publish.py``, ``kernels/store.py``).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(tmp: Path, dest: Path) -> None:
    """fsync ``tmp``, rename it to ``dest`` (same directory), fsync the directory."""
    fsync_path(tmp)
    tmp.rename(dest)
    fsync_path(dest.parent)


def publish_dir(staging: Path, final: Path) -> None:
    """Rename ``staging`` (every file in it fsynced already) to ``final``, durably.

    ``staging`` may sit in another directory of the same filesystem; the
    directory itself is fsynced first (its entries), then ``final``'s parent.
    """
    publish_file(staging, final)
