"""Snapshot names, the on-disk layout's publication and sweep, and the Firecracker load links."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.names import check_name
from banger.daemon.vms.snapshots import check_snapshot_name, default_name
from banger.disk import layers
from banger.errors import Conflict, InvalidArgument
from banger.paths import Paths


@pytest.mark.parametrize("name", ["s1", "dev-before-upgrade", "a" * 63])
def test_snapshot_names_are_vm_names(name: str) -> None:
    assert check_snapshot_name(name) == name == check_name(name)


@pytest.mark.parametrize("bad", ["", "S1", "a_b", "-a", "a-", "a" * 64, "a.b", "a/b", "x\n"])
def test_bad_snapshot_names_name_the_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^snapshot name: .* is not a DNS label"):
        check_snapshot_name(bad)


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True))
def test_default_names_are_labels_for_any_vm_name(vm: str) -> None:
    name = default_name(vm, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert name.endswith("-20260102-030405") and len(name) <= 63
    assert check_name(name) == name


def test_root_name_follows_the_vm_disk() -> None:
    # a qcow2 overlay becomes a new frozen layer; Firecracker's raw root stays a copy
    layer = files.root_name(Path("/s/vms/x/root.qcow2"))
    assert layers.is_layer(layer) and layer != files.root_name(Path("/s/vms/x/root.qcow2"))
    assert files.root_name(Path("/s/vms/x/root.ext4")) == "root.ext4"


def paths_in(tmp: Path) -> Paths:
    return Paths(tmp / "c", tmp / "s", tmp / "k", tmp / "r")


def test_publish_is_one_rename_and_sweep_keeps_what_is_recorded_or_busy(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    tmp = files.make_temp(paths, "aaa")
    (tmp / "state").write_bytes(b"x" * 8192)
    dest = files.snapshot_dir(paths, "aaa")
    files.publish(tmp, dest, {"name": "s1"})
    assert not tmp.exists() and (dest / "snapshot.json").is_file()
    assert files.disk_usage(dest) >= 8192
    assert oct(dest.stat().st_mode & 0o777) == "0o700"

    files.make_temp(paths, "bbb")  # a crash mid-write
    files.make_temp(paths, "ccc")  # being written right now
    files.snapshot_dir(paths, "ddd").mkdir()  # renamed, never recorded
    removed = files.sweep(paths, known={"aaa"}, busy={"ccc"})
    assert sorted(removed) == [".tmp-bbb", "ddd"]
    assert sorted(p.name for p in files.snapshots_dir(paths).iterdir()) == [".tmp-ccc", "aaa"]


def test_links_exist_only_for_the_load(tmp_path: Path) -> None:
    new_root, new_work = tmp_path / "new-root", tmp_path / "new-work"
    new_root.write_text("root")
    new_work.write_text("work")
    gone = tmp_path / "state" / "vms" / "old"
    recorded = {gone / "root.ext4": new_root, gone / "work.ext4": new_work}
    (tmp_path / "state").mkdir()
    with files.links_at(recorded):
        assert (gone / "root.ext4").read_text() == "root"
        assert os.readlink(gone / "work.ext4") == str(new_work)
    assert not gone.exists() and (tmp_path / "state").is_dir()


def test_links_refuse_a_taken_path_and_leave_it_alone(tmp_path: Path) -> None:
    taken = tmp_path / "vm" / "root.ext4"
    taken.parent.mkdir()
    taken.write_text("someone's disk")
    other = tmp_path / "vm2" / "work.ext4"
    with (
        pytest.raises(Conflict, match="is in use: Firecracker reopens disks"),
        files.links_at({other: tmp_path / "w", taken: tmp_path / "r"}),
    ):
        pytest.fail("unreachable")
    assert taken.read_text() == "someone's disk"
    assert not other.parent.exists()  # what was made before the refusal is undone
    dangling = tmp_path / "vm3" / "root.ext4"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(Conflict), files.links_at({dangling: tmp_path / "r"}):
        pass
