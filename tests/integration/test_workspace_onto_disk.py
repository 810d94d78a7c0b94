"""A real repository written onto a real ext4 image before boot, read back with debugfs.

The copy is compared file by file (content, mode, symlink target, owner 0:0)
with what ``workspace prepare`` would copy, and the recorded state with the one
the guest script computes in the copy (run here, on the rdumped tree).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from banger.disk import ext4
from banger.workspace.disk_plan import NoRoom, Unwritable
from banger.workspace.gitfiles import list_workspace
from banger.workspace.guest_scripts import STATE_RECORD, record_state
from banger.workspace.onto_disk import DestinationExists, write_workspace
from tests.integration.test_disk_ext4 import fsck_clean, make_image

ODD = "it's $x #1; \\ok ü"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "my repo"
    (r / "nested" / "deeper dir").mkdir(parents=True)
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.email", "t@example.test")
    git(r, "config", "user.name", "T")
    (r / "nested" / "deeper dir" / ODD).write_text("odd\n")
    (r / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (r / "run.sh").chmod(0o755)
    (r / "private").write_text("secret-ish\n")
    (r / "private").chmod(0o600)
    (r / "big.bin").write_bytes(os.urandom(300_000))
    (r / "gone").write_text("deleted later\n")
    (r / "link").symlink_to("nested/deeper dir")
    outside = tmp_path / "outside secret"
    outside.write_text("must not be copied\n")
    (r / "escape").symlink_to(outside)  # a link out of the repository: stays a link
    (r / ".gitignore").write_text("ignored\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "first")
    (r / "gone").unlink()  # tracked, deleted in the working tree
    (r / "run.sh").write_text("#!/bin/sh\necho changed\n")  # modified, uncommitted
    (r / "untracked new").write_text("new\n")
    (r / "ignored").write_text("stays on the host\n")
    return r


def rdump(image: Path, path: str, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["debugfs", "-R", f'rdump "{path}" {into}', str(image)], check=True,
                   capture_output=True)  # fmt: skip
    return into / PurePosixPath(path).name


def test_written_copy_matches_the_listing_and_the_guest_record(repo: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "work.ext4", 64)
    listing = list_workspace(repo)
    result = write_workspace(image, listing, PurePosixPath("/root/my repo"))
    fsck_clean(image)
    assert result.files == listing.files
    copy = rdump(image, "/my repo", tmp_path / "dump")

    for m in listing.members:
        got = copy / m.arcname
        if m.kind == "symlink":
            assert got.is_symlink() and os.readlink(got) == os.readlink(m.path), m.arcname
        elif m.kind == "file":
            assert got.read_bytes() == m.path.read_bytes(), m.arcname
        else:
            assert got.is_dir() and not got.is_symlink(), m.arcname
    # rdump restores modes; owners are read from the image itself
    assert (copy / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (copy / "private").stat().st_mode & 0o7777 == 0o600
    assert os.readlink(copy / "escape") == str(tmp_path / "outside secret")
    assert not (copy / "ignored").exists() and not (copy / "gone").exists()
    for path in ("/my repo/run.sh", "/my repo/escape", f"/my repo/nested/deeper dir/{ODD}",
                 "/my repo/.git/HEAD", "/my repo/nested"):  # fmt: skip
        st = ext4.stat(image, path)
        assert (st.uid, st.gid) == (0, 0), path
    assert int((copy / "run.sh").stat().st_mtime) == int((repo / "run.sh").stat().st_mtime)

    # the record is what the guest's own script computes in the copy
    written = (copy / ".git" / STATE_RECORD).read_text()
    assert written == f"{result.state.head} {result.state.tree}\n"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "nohome")}
    subprocess.run(["sh", "-c", record_state(PurePosixPath(str(copy)))], env=env, check=True)
    assert (copy / ".git" / STATE_RECORD).read_text() == written
    # and the objects it names are in the copy (the guard diffs against them)
    git(copy, "cat-file", "-e", f"{result.state.tree}^{{tree}}")
    assert git(copy, "status", "--porcelain") == git(repo, "status", "--porcelain")


def test_host_repository_objects_untouched(repo: Path, tmp_path: Path) -> None:
    before = git(repo, "count-objects", "-v")
    image = make_image(tmp_path / "work.ext4", 64)
    write_workspace(image, list_workspace(repo), PurePosixPath("/root/r"))
    assert git(repo, "count-objects", "-v") == before


@pytest.mark.parametrize("name", ['say "hi"', "two\nlines"])
def test_names_debugfs_cannot_write_are_refused_before_writing(
    repo: Path, tmp_path: Path, name: str
) -> None:
    (repo / name).write_text("x\n")
    image = make_image(tmp_path / "work.ext4", 64)
    with pytest.raises(Unwritable, match="debugfs cannot express"):
        write_workspace(image, list_workspace(repo), PurePosixPath("/root/r"))
    assert not ext4.exists(image, "/r")
    fsck_clean(image)


def test_existing_destination_and_no_room_are_refused(repo: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "work.ext4", 64)
    write_workspace(image, list_workspace(repo), PurePosixPath("/root/r"))
    with pytest.raises(DestinationExists, match="/r already exists"):
        write_workspace(image, list_workspace(repo), PurePosixPath("/root/r"))
    (repo / "huge.bin").write_bytes(os.urandom(1024 * 1024) * 8)
    small = make_image(tmp_path / "small.ext4", 8)
    with pytest.raises(NoRoom, match=r"needs \d+\.\d MiB on the work disk, which has"):
        write_workspace(small, list_workspace(repo), PurePosixPath("/root/r"))
    assert not ext4.exists(small, "/r")


def test_a_repository_path_git_and_debugfs_would_misread(tmp_path: Path) -> None:
    """The host path is never written into a script (descriptors), and git's alternates
    variable gets it quoted: a ``:``, a quote, a backslash and a newline are fine."""
    r = tmp_path / 'odd: "dir"\\ \nname'
    r.mkdir()
    git(r, "init", "-q")
    (r / "a").write_text("a\n")
    git(r, "add", "a")
    git(r, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "one")
    (r / "b").write_text("untracked\n")
    image = make_image(tmp_path / "work.ext4", 32)
    result = write_workspace(image, list_workspace(r), PurePosixPath("/root/odd"))
    copy = rdump(image, "/odd", tmp_path / "dump")
    assert (copy / "b").read_text() == "untracked\n"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "nohome")}
    subprocess.run(["sh", "-c", record_state(PurePosixPath(str(copy)))], env=env, check=True)
    assert (copy / ".git" / STATE_RECORD).read_text() == result.state.record.decode()
