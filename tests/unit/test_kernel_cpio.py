"""The newc writer, checked by the host's cpio and busybox reading our bytes back."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from banger.kernels.cpio import CpioEntry, write_newc

ENTRIES = [
    CpioEntry.directory("bin"),
    CpioEntry.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
    CpioEntry.file("empty", b""),
    CpioEntry.file("odd", b"123"),  # a length that needs padding
    CpioEntry.symlink("bin/sh", "tool"),
    CpioEntry.directory("dev"),
    CpioEntry.char_device("dev/console", 5, 1),
    CpioEntry.directory("a-longer-directory-name-for-padding"),
    CpioEntry.file("a-longer-directory-name-for-padding/x", b"x" * 4097),
]


def cpio(*args: str, data: bytes, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["cpio", *args], input=data, capture_output=True, check=True, cwd=cwd
    ).stdout.decode()


def test_host_cpio_lists_every_member_in_order() -> None:
    listing = cpio("-it", "--quiet", data=write_newc(ENTRIES)).split()
    assert listing == [e.name for e in ENTRIES]


def test_busybox_cpio_lists_every_member() -> None:
    out = subprocess.run(
        ["busybox", "cpio", "-t"], input=write_newc(ENTRIES), capture_output=True, check=True
    ).stdout.decode()
    assert out.split() == [e.name for e in ENTRIES]


def test_verbose_listing_shows_owner_root_and_modes() -> None:
    lines = cpio("-itv", "--quiet", "--numeric-uid-gid", data=write_newc(ENTRIES)).splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in lines}
    assert by_name["bin/tool"].startswith("-rwxr-xr-x")
    assert by_name["odd"].startswith("-rw-r--r--")
    assert by_name["bin/sh"].startswith("lrwxrwxrwx")
    assert by_name["dev/console"].startswith("crw-------")
    assert " 5,   1 " in by_name["dev/console"]
    for line in lines:
        assert line.split()[2:4] == ["0", "0"], line


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_extracted_tree_has_the_contents(tmp_path: Path) -> None:
    cpio("-id", "--quiet", "--no-absolute-filenames", data=write_newc(ENTRIES), cwd=tmp_path)
    assert (tmp_path / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((tmp_path / "bin/tool").stat().st_mode) == 0o755
    assert (tmp_path / "odd").read_bytes() == b"123"
    assert (tmp_path / "empty").read_bytes() == b""
    assert os.readlink(tmp_path / "bin/sh") == "tool"
    assert (tmp_path / "a-longer-directory-name-for-padding/x").read_bytes() == b"x" * 4097
    console = (tmp_path / "dev/console").lstat()
    assert stat.S_ISCHR(console.st_mode)
    assert (os.major(console.st_rdev), os.minor(console.st_rdev)) == (5, 1)


def test_layout_is_aligned_and_ends_with_trailer() -> None:
    data = write_newc(ENTRIES)
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data[-128:]


def test_output_is_deterministic() -> None:
    assert write_newc(ENTRIES) == write_newc(list(ENTRIES))


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../b", "", "a//b", "TRAILER!!!"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="bad cpio member name"):
        write_newc([CpioEntry.file(name, b"")])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        write_newc([CpioEntry.directory("a"), CpioEntry.directory("a")])
