"""Pure builders for the device-mapper snapshot strategy.

Not exercised against a kernel: this machine's kernel has no device-mapper
(no /dev/mapper/control); the helper operation that runs these comes later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.disk.cow import (
    device_mapper_usable,
    dm_name,
    dmsetup_create_argv,
    dmsetup_remove_argv,
    sectors_of,
    snapshot_table,
)
from banger.errors import InvalidArgument


def test_snapshot_table() -> None:
    assert snapshot_table("/dev/loop3", "/dev/loop4", 2097152) == (
        "0 2097152 snapshot /dev/loop3 /dev/loop4 P 8"
    )
    assert snapshot_table("7:3", "7:4", 8, chunk_sectors=16) == "0 8 snapshot 7:3 7:4 P 16"


@pytest.mark.parametrize(
    ("origin", "cow", "sectors", "chunk"),
    [
        ("/dev/sda; rm -rf /", "/dev/loop4", 8, 8),
        ("/dev/loop3", "loop4", 8, 8),
        ("/dev/loop3", "/dev/loop4", 0, 8),
        ("/dev/loop3", "/dev/loop4", 8, 12),
    ],
)
def test_snapshot_table_refuses_bad_input(origin: str, cow: str, sectors: int, chunk: int) -> None:
    with pytest.raises(InvalidArgument):
        snapshot_table(origin, cow, sectors, chunk)


def test_dmsetup_argv() -> None:
    name = dm_name("0a1b2c")
    assert name == "banger-0a1b2c"
    table = snapshot_table("/dev/loop0", "/dev/loop1", 16)
    assert dmsetup_create_argv(name, table) == ["dmsetup", "create", name, "--table", table]
    assert dmsetup_remove_argv(name) == ["dmsetup", "remove", "--retry", name]
    for bad in ("other-device", "banger-../x", "banger-A B"):
        with pytest.raises(InvalidArgument):
            dmsetup_remove_argv(bad)
    with pytest.raises(InvalidArgument):
        dm_name("Bad Id")


def test_sectors_of(tmp_path: Path) -> None:
    f = tmp_path / "base"
    with open(f, "wb") as fh:
        fh.truncate(1024 * 1024)
    assert sectors_of(f) == 2048
    with open(f, "wb") as fh:
        fh.truncate(1000)
    with pytest.raises(InvalidArgument):
        sectors_of(f)


def test_device_mapper_usable(tmp_path: Path) -> None:
    assert device_mapper_usable(tmp_path / "absent") is False
    (tmp_path / "file").write_text("")
    assert device_mapper_usable(tmp_path / "file") is False  # not a character device
    assert device_mapper_usable(Path("/dev/null")) is True
