"""The helper's ``remove_staging`` op: names only staging dirs, never follows or crosses out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument
from banger.helper import staging
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request
from tests.support import needs_root

OWNER = 65534  # nobody: any uid that is not root shows the ownership checks work


#: The helper's op table, as banger-helper builds it.
SPECS = op_specs(op_table(None))


def check(root: Path, path: str) -> staging.RemoveStagingArgs:
    request = {"id": 1, "op": staging.OP, "args": {"path": path}}
    args = validate_request(Context((root,)), request, SPECS).args
    assert isinstance(args, staging.RemoveStagingArgs)
    return args


def staging_dir(root: Path, name: str = "pull-1a2b3c4d", uid: int = OWNER) -> Path:
    path = root / "tmp" / name
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    return path


def test_only_a_staging_directory_of_tmp_can_be_named(tmp_path: Path) -> None:
    for name in ("pull-1a2b3c4d", "register-00ff00ff"):
        staging_dir(tmp_path, name)
        assert check(tmp_path, f"{tmp_path}/tmp/{name}").path == tmp_path / "tmp" / name
    (tmp_path / "images" / "pull-1a2b3c4d").mkdir(parents=True)
    (tmp_path / "tmp" / "pull-1A2B3C4D").mkdir()
    (tmp_path / "tmp" / "build-1a2b3c4d").mkdir()
    (tmp_path / "tmp" / "link").symlink_to(tmp_path / "tmp" / "pull-1a2b3c4d")
    for bad, why in [
        (f"{tmp_path}/images/pull-1a2b3c4d", "tmp/pull-<8 hex>"),
        (f"{tmp_path}/tmp/pull-1A2B3C4D", "tmp/pull-<8 hex>"),
        (f"{tmp_path}/tmp/build-1a2b3c4d", "tmp/pull-<8 hex>"),
        (f"{tmp_path}/tmp/link", "symlink"),
        (f"{tmp_path}/tmp/pull-1a2b3c4d/../pull-1a2b3c4d", "normalised"),
        (f"{tmp_path}/tmp/pull-99999999", "does not exist"),
        ("/tmp/pull-1a2b3c4d", "allowed root"),
        (f"{tmp_path}/tmp/pull-1a2b3c4d\x00", "NUL"),
    ]:
        with pytest.raises(RequestInvalid) as info:
            check(tmp_path, bad)
        assert str(info.value).startswith("remove_staging.args.path: ") and why in str(info.value)


@needs_root
@pytest.mark.root
def test_root_owned_leftovers_go_and_nothing_outside_is_touched(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious"
    precious.write_text("keep")
    path = staging_dir(tmp_path)
    tree = path / "tmp" / "build-abc" / "tree"
    (tree / "etc" / "ssh").mkdir(parents=True)  # root-owned, as a killed helper leaves them
    (tree / "etc" / "shadow").write_text("x")
    (tree / "etc" / "ssh").chmod(0o700)
    (tree / "escape").symlink_to(outside)  # followed, it would empty outside/
    (tree / "hard").hardlink_to(precious)
    (path / "progress.log").write_text("step\n")
    os.chown(path / "progress.log", OWNER, OWNER)

    result = staging.remove_staging(check(tmp_path, str(path)), OWNER)

    assert result == {"path": str(path), "removed": 10}
    assert not path.exists()
    assert precious.read_text() == "keep" and outside.is_dir()


@needs_root
@pytest.mark.root
def test_refuses_what_is_not_the_owners_or_still_in_use(tmp_path: Path) -> None:
    foreign = staging_dir(tmp_path, "pull-00000001", uid=0)
    with pytest.raises(InvalidArgument, match="is not the owner's directory"):
        staging.remove_staging(check(tmp_path, str(foreign)), OWNER)
    assert foreign.is_dir()
    busy = staging_dir(tmp_path, "pull-00000002")
    with staging.in_use(busy), pytest.raises(Conflict, match="in use"):
        staging.remove_staging(check(tmp_path, str(busy)), OWNER)
    assert busy.is_dir()
    staging.remove_staging(check(tmp_path, str(busy)), OWNER)  # released: now it goes
    assert not busy.exists()


def test_a_symlink_swapped_in_after_validation_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "file").write_text("keep")
    path = staging_dir(tmp_path, uid=os.getuid())
    args = check(tmp_path, str(path))
    path.rmdir()
    path.symlink_to(target)
    with pytest.raises(
        InvalidArgument, match=r"remove_staging\.args\.path: .*(Not a directory|Too many levels)"
    ):
        staging.remove_staging(args, os.getuid())
    assert (target / "file").read_text() == "keep"


def test_a_deep_tree_is_removed_whole_without_recursion(tmp_path: Path) -> None:
    """1500 nested directories (a pulled layer can hold them): removed iteratively,
    not refused, so the staging directory is not stranded (issue #22)."""
    path = staging_dir(tmp_path, uid=os.getuid())
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # by descriptor: the path would exceed PATH_MAX
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    result = staging.remove_staging(check(tmp_path, str(path)), os.getuid())
    assert result["removed"] == 1501
    assert not path.exists()


@needs_root
@pytest.mark.root
def test_a_mount_left_under_it_is_refused_not_emptied(tmp_path: Path) -> None:
    path = staging_dir(tmp_path)
    proc = path / "tree" / "proc"
    proc.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(proc)], check=True)
    try:
        (proc / "inside").write_text("x")
        with pytest.raises(Conflict, match="mounted under"):
            staging.remove_staging(check(tmp_path, str(path)), OWNER)
        assert (proc / "inside").is_file()
    finally:
        subprocess.run(["umount", str(proc)], check=True)
    staging.remove_staging(check(tmp_path, str(path)), OWNER)
    assert not path.exists()
