"""A full disk during an image build: one line naming the filesystem and the step.

The end-to-end case (a real build on a small loop-mounted filesystem) is
``tests/reliability/test_image_build_disk_full.py``; these are the pieces,
on real files: ``/dev/full`` answers every write with ENOSPC.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from banger import proc
from banger.diskfull import DiskFull, mount_point
from banger.errors import CommandError
from banger.helper.image_build import PROGRESS_NAME, _progress_writer
from banger.helper.rootstage import empty_dir
from banger.images.build import disk_full_as_error, mounts_under, remove_build_dir
from tests.support import needs_root


def test_mount_point_of_a_missing_path_is_its_filesystems() -> None:
    assert mount_point(Path("/proc/self/no/such/dir")) == Path("/proc")
    assert mount_point(Path("/")) == Path("/")


def test_a_failed_write_becomes_one_disk_full_line(tmp_path: Path) -> None:
    with (
        pytest.raises(DiskFull) as caught,
        disk_full_as_error("writing", tmp_path / "work"),
        open("/dev/full", "wb") as f,
    ):
        f.write(b"x" * 8192)
        f.flush()
    message = caught.value.message
    assert "\n" not in message
    assert message == (
        f"image build failed: no space left on device under {mount_point(tmp_path)} (writing)"
    )
    assert caught.value.hint and "BANGER_HOME" in caught.value.hint


def test_a_command_that_says_so_becomes_disk_full(tmp_path: Path) -> None:
    # dd to /dev/full: a real command failing the way tar, dpkg and mke2fs do.
    with pytest.raises(DiskFull, match=r"\(dd\)$"), disk_full_as_error("dd", tmp_path):
        proc.run(["dd", "if=/dev/zero", "of=/dev/full", "bs=4096", "count=1"])


def test_other_failures_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="false failed"), disk_full_as_error("x", tmp_path):
        proc.run(["false"])
    with pytest.raises(FileNotFoundError), disk_full_as_error("x", tmp_path):
        (tmp_path / "missing").read_bytes()
    with pytest.raises(OSError) as caught, disk_full_as_error("x", tmp_path):
        raise OSError(errno.EACCES, "denied")
    assert not isinstance(caught.value, DiskFull)


def test_progress_on_a_full_disk_drops_the_line_not_the_build() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        _progress_writer(fd)("I: extracting archives...")  # no exception
    finally:
        os.close(fd)


def test_leftovers_of_a_failed_build_are_removed_but_the_progress_file(tmp_path: Path) -> None:
    (tmp_path / PROGRESS_NAME).write_text("building\n")
    (tmp_path / "tmp" / "build-1" / "tree").mkdir(parents=True)
    (tmp_path / "tmp" / "build-1" / "tree" / "file").write_text("x")
    (tmp_path / "images").mkdir()
    (tmp_path / "stray").write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (tmp_path / "link").symlink_to(outside)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        empty_dir(fd, keep=frozenset({PROGRESS_NAME}))
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROGRESS_NAME]
    assert (outside / "keep").is_file()  # the symlink went, not what it points at


@pytest.mark.root
@needs_root
def test_a_build_dir_with_mounts_left_is_removed_without_crossing_them(tmp_path: Path) -> None:
    """What a killed mmdebstrap leaves: a bind mount of a host directory inside the tree."""
    host = tmp_path / "host dir"  # a space: mountinfo escapes it
    host.mkdir()
    (host / "precious").write_text("x")
    work = tmp_path / "build-1"
    (work / "tree" / "sys").mkdir(parents=True)
    (work / "tree" / "proc").mkdir()
    proc.run(["mount", "--bind", host, work / "tree" / "sys"])
    proc.run(["mount", "-t", "tmpfs", "tmpfs", work / "tree" / "proc"])
    try:
        assert set(mounts_under(work)) == {work / "tree" / "sys", work / "tree" / "proc"}
        remove_build_dir(work)
        assert not work.exists()
        assert (host / "precious").read_text() == "x"
    finally:
        for point in mounts_under(tmp_path):
            proc.run(["umount", "--lazy", point], check=False)
