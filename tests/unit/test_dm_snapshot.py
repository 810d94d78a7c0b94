"""Device-mapper snapshots (issue #22 item 8): the structs, tables, argv and parsers, and
the helper ops' validation. This machine has no device-mapper: creating a snapshot is
not exercised here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger.disk import dmsnap
from banger.errors import InvalidArgument
from banger.helper import dm_ops
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request

VM = "0123456789ab"
SPECS = op_specs(op_table(None))


def test_loop_config_is_the_kernels_struct_with_autoclear() -> None:
    ro = dmsnap.loop_config(7, read_only=True, file_name="banger-x-origin")
    rw = dmsnap.loop_config(9, read_only=False, file_name="n" * 100)
    assert len(ro) == len(rw) == 304  # sizeof(struct loop_config)
    assert dmsnap.loop_config_flags(ro) == (
        7,
        dmsnap.LO_FLAGS_AUTOCLEAR | dmsnap.LO_FLAGS_READ_ONLY,
    )
    assert dmsnap.loop_config_flags(rw) == (9, dmsnap.LO_FLAGS_AUTOCLEAR)
    assert b"banger-x-origin\x00" in ro and b"n" * 63 + b"\x00" in rw  # name cut to 63


def test_the_snapshot_table_and_its_refusals() -> None:
    table = dmsnap.snapshot_table("/dev/loop3", "/dev/loop4", 4194304)
    assert table == "0 4194304 snapshot /dev/loop3 /dev/loop4 P 8"
    for bad in (("/dev/sda", "/dev/loop4", 8), ("/dev/loop3", "/dev/loop4 /x", 8),
                ("/dev/loop3", "/dev/loop4", 0)):  # fmt: skip
        with pytest.raises(InvalidArgument):
            dmsnap.snapshot_table(*bad)
    with pytest.raises(InvalidArgument, match="power of two"):
        dmsnap.snapshot_table("/dev/loop3", "/dev/loop4", 8, chunk_sectors=6)
    assert dmsnap.sectors_for(2 << 30, "origin") == 4194304
    with pytest.raises(InvalidArgument, match="512-byte sectors"):
        dmsnap.sectors_for(1000, "origin")


def test_dmsetup_argv_names_only_banger_snapshots() -> None:
    name = dmsnap.dm_name(VM)
    assert dmsnap.dmsetup_create_argv(name, "0 8 snapshot /dev/loop1 /dev/loop2 P 8") == [
        "dmsetup", "create", "banger-0123456789ab", "--table",
        "0 8 snapshot /dev/loop1 /dev/loop2 P 8",
    ]  # fmt: skip
    assert dmsnap.dmsetup_remove_argv(name) == ["dmsetup", "remove", "--retry", name]
    for bad in ("banger-../x", "root", "banger-0123456789ab --force", "banger-XYZ"):
        with pytest.raises(InvalidArgument):
            dmsnap.dmsetup_remove_argv(bad)
    with pytest.raises(InvalidArgument):
        dmsnap.dm_name("../etc")


def test_dmsetup_ls_is_parsed_and_stale_snapshots_found() -> None:
    output = (
        "banger-0123456789ab\t(253:0)\n"
        "banger-aaaaaaaaaaaa\t(253, 1)\n"
        "vg0-root\t(253:2)\n"
        "banger-not-a-vm\t(253:3)\n"
    )
    devices = dmsnap.parse_dmsetup_ls(output)
    assert [(d.name, d.major, d.minor) for d in devices] == [
        ("banger-0123456789ab", 253, 0),
        ("banger-aaaaaaaaaaaa", 253, 1),
    ]
    assert dmsnap.parse_dmsetup_ls("No devices found\n") == []
    stale = dmsnap.stale_snapshots(devices, {"0123456789ab"})
    assert [d.vm_id for d in stale] == ["aaaaaaaaaaaa"]


def _request(op: str, **args: object) -> dict[str, object]:
    return {"id": 1, "op": op, "args": args}


def test_the_ops_are_in_the_table_and_validate_every_field(tmp_path: Path) -> None:
    ctx = Context((tmp_path,))
    (tmp_path / "rootfs.ext4").write_bytes(b"\0" * 4096)
    (tmp_path / "root.cow").write_bytes(b"")
    good = validate_request(ctx, _request(dm_ops.CREATE, vm_id=VM,
                                          origin=str(tmp_path / "rootfs.ext4"),
                                          cow=str(tmp_path / "root.cow")), SPECS)  # fmt: skip
    assert isinstance(good.args, dm_ops.DmCreateArgs) and good.args.vm_id == VM
    assert validate_request(ctx, _request(dm_ops.REMOVE, vm_id=VM), SPECS).args == (
        dm_ops.DmRemoveArgs(VM)
    )
    (tmp_path / "link").symlink_to(tmp_path / "rootfs.ext4")
    for args, field in [
        ({"vm_id": "../../x", "origin": str(tmp_path / "rootfs.ext4"),
          "cow": str(tmp_path / "root.cow")}, "vm_id"),
        ({"vm_id": VM, "origin": str(tmp_path / "link"), "cow": str(tmp_path / "root.cow")},
         "origin"),
        ({"vm_id": VM, "origin": "/etc/shadow", "cow": str(tmp_path / "root.cow")}, "origin"),
        ({"vm_id": VM, "origin": str(tmp_path / "rootfs.ext4")}, "cow"),
    ]:  # fmt: skip
        with pytest.raises(RequestInvalid) as err:
            validate_request(ctx, _request(dm_ops.CREATE, **args), SPECS)
        assert f"{dm_ops.CREATE}.args.{field}" in str(err.value)


def test_files_are_checked_on_the_descriptor(tmp_path: Path) -> None:
    uid = os.getuid()
    ok = tmp_path / "rootfs.ext4"
    ok.write_bytes(b"\0" * 512)
    fd = dm_ops.open_owned_file(ok, uid, write=False, what="origin")
    os.close(fd)
    with pytest.raises(InvalidArgument, match="not a regular file"):
        dm_ops.open_owned_file(tmp_path, uid, write=False, what="origin")
    with pytest.raises(InvalidArgument, match="not the owner's file"):
        dm_ops.open_owned_file(ok, uid + 1, write=False, what="origin")
    os.link(ok, tmp_path / "second-name")
    with pytest.raises(InvalidArgument, match="other hard links"):
        dm_ops.open_owned_file(ok, uid, write=False, what="origin")
    (tmp_path / "swapped").symlink_to("/etc/passwd")  # a swap after validation
    with pytest.raises(InvalidArgument, match=r"origin: .*swapped"):
        dm_ops.open_owned_file(tmp_path / "swapped", uid, write=False, what="origin")


def test_snapshots_are_listed_from_sysfs_and_their_owner_read(tmp_path: Path) -> None:
    sys_block = tmp_path / "block"
    for dev, name in (("dm-0", "banger-0123456789ab"), ("dm-1", "vg0-root"),
                      ("dm-2", "banger-aaaaaaaaaaaa")):  # fmt: skip
        (sys_block / dev / "dm").mkdir(parents=True)
        (sys_block / dev / "dm" / "name").write_text(name + "\n")
    (sys_block / "loop0").mkdir()
    assert dmsnap.snapshot_names(sys_block) == ["banger-0123456789ab", "banger-aaaaaaaaaaaa"]
    mapper = tmp_path / "mapper"
    mapper.mkdir()
    (mapper / "banger-0123456789ab").write_text("")  # stands in for the node
    assert dmsnap.node_owner("banger-0123456789ab", mapper) == os.getuid()
    assert dmsnap.node_owner("banger-aaaaaaaaaaaa", mapper) is None
