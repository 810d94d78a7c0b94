"""The ext4 toolkit against real images: real debugfs, mkfs.ext4 and e2fsck."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit
from banger.errors import BangerError, Conflict, NotFound
from tests.support import short_tmpdir, throwaway_user


def make_image(path: Path, size_mib: int = 64) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    return path


def fsck_clean(image: Path) -> None:
    result = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.ext4")


def test_batch_writes_files_dirs_and_owners(image: Path, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    host_file = tmp_path / "host file.txt"
    host_file.write_bytes(b"from the host\n" * 1000)
    edit = (
        Ext4Edit()
        .ensure_root_dir_mode()
        .mkdir("/.ssh", 0o700)
        .write_bytes("/.ssh/authorized_keys", b"ssh-ed25519 AAAA test\n", 0o600, stage_dir=stage)
        .mkdir_p("/deep/er dir/leaf", 0o750, 1000, 1001)
        .write_file("/deep/er dir/leaf/a file with spaces", host_file, 0o640, 1000, 1001)
        .symlink("/link", "/deep/er dir")
    )
    ext4.apply(image, edit, stage_dir=stage)

    assert ext4.read_file(image, "/.ssh/authorized_keys") == b"ssh-ed25519 AAAA test\n"
    assert ext4.read_file(image, "/deep/er dir/leaf/a file with spaces") == host_file.read_bytes()
    found = ext4.stat_many(
        image, ["/", "/.ssh", "/.ssh/authorized_keys", "/deep/er dir/leaf", "/link", "/nope"]
    )
    root, ssh, ak, leaf, link = (found[p] for p in list(found)[:5])
    assert root is not None and (root.kind, root.mode, root.uid, root.gid) == ("dir", 0o755, 0, 0)
    assert ssh is not None and (ssh.kind, ssh.mode) == ("dir", 0o700)
    assert ak is not None and (ak.kind, ak.mode, ak.uid, ak.gid) == ("file", 0o600, 0, 0)
    assert leaf is not None and (leaf.mode, leaf.uid, leaf.gid) == (0o750, 1000, 1001)
    assert link is not None and link.kind == "symlink"
    assert found["/nope"] is None
    assert ext4.listdir(image, "/deep/er dir/leaf") == ["a file with spaces"]
    assert ext4.exists(image, "/link") and not ext4.exists(image, "/nope")
    fsck_clean(image)


def test_large_batches_are_not_mistaken_for_failures(image: Path, tmp_path: Path) -> None:
    # debugfs exits with the count of unknown (marker) commands mod 256; batches whose
    # count lands in 126..255 once looked like a failed command.
    stage = tmp_path / "stage"
    stage.mkdir()
    edit = Ext4Edit().mkdir("/many", 0o755)
    for i in range(300):
        edit = edit.write_bytes(f"/many/f{i}", f"{i}\n".encode(), 0o644, stage_dir=stage)
    ext4.apply(image, edit, stage_dir=stage)
    assert len(ext4.listdir(image, "/many")) == 300
    assert ext4.read_file(image, "/many/f299") == b"299\n"
    fsck_clean(image)


def test_overwrite_replaces_content_and_a_file_in_the_way_of_a_dir(
    image: Path, tmp_path: Path
) -> None:
    stage = tmp_path
    ext4.apply(
        image, Ext4Edit().write_bytes("/f", b"old old old", stage_dir=stage), stage_dir=stage
    )
    ext4.apply(image, Ext4Edit().write_bytes("/f", b"new", 0o644, stage_dir=stage), stage_dir=stage)
    assert ext4.read_file(image, "/f") == b"new"
    assert ext4.stat(image, "/f").mode == 0o644
    # a file where a directory must be is replaced, never re-typed in place
    ext4.apply(image, Ext4Edit().mkdir("/f", 0o700), stage_dir=stage)
    assert ext4.stat(image, "/f").kind == "dir"
    # an existing directory keeps its contents
    ext4.apply(image, Ext4Edit().write_bytes("/f/x", b"1", stage_dir=stage), stage_dir=stage)
    ext4.apply(image, Ext4Edit().mkdir("/f", 0o755), stage_dir=stage)
    assert ext4.listdir(image, "/f") == ["x"]
    assert ext4.stat(image, "/f").mode == 0o755
    fsck_clean(image)


def test_a_file_in_the_way_of_a_parent_is_refused_before_debugfs_runs(
    image: Path, tmp_path: Path
) -> None:
    ext4.apply(image, Ext4Edit().write_bytes("/file", b"x", stage_dir=tmp_path), stage_dir=tmp_path)
    edit = Ext4Edit().write_bytes("/file/child", b"y", stage_dir=tmp_path)
    with pytest.raises(
        Conflict, match="cannot create /file/child in the disk image: /file is a file"
    ):
        ext4.apply(image, edit, stage_dir=tmp_path)
    with pytest.raises(Conflict, match="/file is a file"):
        ext4.apply(image, Ext4Edit().mkdir("/file/d"))
    fsck_clean(image)  # mkdir below a file would have damaged it


def test_debugfs_error_names_the_failing_command(tmp_path: Path) -> None:
    small = make_image(tmp_path / "small.ext4", size_mib=8)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    with pytest.raises(BangerError, match=r'debugfs failed on .*`write ".*/big" "/big"`.*allocate'):
        ext4.apply(small, Ext4Edit().mkdir("/d").write_file("/big", big))
    fsck_clean(small)


def test_missing_host_source_is_an_error(image: Path, tmp_path: Path) -> None:
    with pytest.raises(BangerError, match=r'`write ".*/absent" "/x"`'):
        ext4.apply(image, Ext4Edit().write_file("/x", tmp_path / "absent"))


def test_not_an_ext4_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(BangerError, match="debugfs cannot open"):
        ext4.apply(junk, Ext4Edit().mkdir("/x"))
    with pytest.raises(NotFound):
        ext4.stat(tmp_path / "absent.img", "/")


def test_read_side_errors(image: Path) -> None:
    with pytest.raises(NotFound):
        ext4.read_file(image, "/absent")
    with pytest.raises(BangerError, match="is a dir, not a file"):
        ext4.read_file(image, "/lost+found")
    with pytest.raises(NotFound):
        ext4.listdir(image, "/absent")


@pytest.mark.root
def test_unprivileged_owner_edits_its_own_image(tmp_path: Path) -> None:
    """The daemon runs as the owner: debugfs must work without root on its files."""
    with throwaway_user() as user:
        work = user.home / "w"
        work.mkdir()
        image = make_image(work / "disk.ext4")
        os.chown(work, user.uid, user.gid)
        os.chown(image, user.uid, user.gid)
        script = textwrap.dedent(
            f"""
            import os, tempfile
            from pathlib import Path
            from banger.disk import ext4
            from banger.disk.debugfs_script import Ext4Edit
            assert os.getuid() == {user.uid}
            image = Path({str(image)!r})
            with tempfile.TemporaryDirectory(dir={str(work)!r}) as stage:
                edit = (
                    Ext4Edit()
                    .ensure_root_dir_mode()
                    .mkdir("/.ssh", 0o700)
                    .write_bytes("/.ssh/authorized_keys", b"key\\n", 0o600, stage_dir=Path(stage))
                )
                ext4.apply(image, edit, stage_dir=Path(stage))
            print("ok")
            """
        )
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={user.uid}",
                f"--regid={user.gid}",
                "--clear-groups",
                sys.executable,
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            cwd=work,
            env={"PATH": os.environ["PATH"], "HOME": str(user.home), "TMPDIR": str(work)},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"
        ak = ext4.stat(image, "/.ssh/authorized_keys")
        # root:root inside the image although written by an unprivileged user
        assert (ak.mode, ak.uid, ak.gid) == (0o600, 0, 0)
        assert ext4.read_file(image, "/.ssh/authorized_keys") == b"key\n"
        assert image.stat().st_uid == user.uid
        fsck_clean(image)


NAME_CHARS = st.characters(
    min_codepoint=0x20,
    max_codepoint=0x2FFF,
    blacklist_characters='"/',
    blacklist_categories=("Cc", "Cs"),
)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.text(NAME_CHARS, min_size=1, max_size=40), min_size=1, max_size=4))
def test_any_expressible_name_round_trips(names: list[str]) -> None:
    """Whatever image_path accepts, debugfs writes under exactly that name."""
    names = [n for n in dict.fromkeys(names) if n not in (".", "..")]
    if not names:
        return
    with short_tmpdir() as tmp:
        image = make_image(tmp / "disk.ext4", size_mib=8)
        edit = Ext4Edit().mkdir("/d")
        for i, name in enumerate(names):
            edit.write_bytes(f"/d/{name}", str(i).encode(), 0o644, stage_dir=tmp)
        ext4.apply(image, edit, stage_dir=tmp)
        assert ext4.listdir(image, "/d") == sorted(names)
        for i, name in enumerate(names):
            assert ext4.read_file(image, f"/d/{name}") == str(i).encode()
