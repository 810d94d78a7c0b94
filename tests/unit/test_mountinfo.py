"""The mount table reader: the kernel's octal escapes, strictly-below, this host's table."""

from __future__ import annotations

import os
from pathlib import Path

from banger import mountinfo

# -- the mount table -------------------------------------------------------------------
MOUNTINFO = (
    b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    b"40 22 0:5 / /work/a\\040b rw - tmpfs t rw\n"  # a space, as the kernel escapes it
    b"41 40 0:6 / /work/a\\040b/x\\011y\\012z\\134 rw - tmpfs t rw\n"  # tab, newline, \
    b"42 22 0:7 / /work/\\377bytes rw - tmpfs t rw\n"  # not UTF-8
    b"43 22 0:8 / /workshop rw - tmpfs t rw\n"  # shares a prefix, not a child
    b"44 22 0:9 / /work rw - tmpfs t rw\n"
)


def test_mount_points_undo_the_kernels_octal_escapes() -> None:
    assert mountinfo.mount_points(MOUNTINFO) == [
        "/",
        "/work/a b",
        "/work/a b/x\ty\nz\\",
        os.fsdecode(b"/work/\xffbytes"),
        "/workshop",
        "/work",
    ]


def test_mounts_below_is_strictly_below_and_not_a_sibling_prefix(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_bytes(MOUNTINFO)
    below = mountinfo.mounts_below("/work", table)
    assert below == ["/work/a b", "/work/a b/x\ty\nz\\", os.fsdecode(b"/work/\xffbytes")]
    assert mountinfo.mounts_below("/work/", table) == below
    assert mountinfo.mounts_below(Path("/work/a b"), table) == ["/work/a b/x\ty\nz\\"]
    assert mountinfo.mounts_below("/nowhere", table) == []
    assert mountinfo.mounts_below("/work", tmp_path / "missing") == []


def test_mounts_below_reads_this_process_table() -> None:
    # /proc is mounted on every Linux host this runs on; /proc's own mount is not below /.
    assert "/proc" in mountinfo.mounts_below("/")
    assert "/" not in mountinfo.mounts_below("/")
