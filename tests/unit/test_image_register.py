from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from banger.errors import InvalidArgument, NotFound
from banger.images.register import safe_extract, source_kind

pytestmark = pytest.mark.root


def tar_with(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(
    name: str, data: bytes = b"x", mode: int = 0o644, uid: int = 0
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
    return info, data


def link_member(
    name: str, target: str, kind: bytes = tarfile.SYMTYPE, mode: int = 0o777
) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info, None


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind(tmp_path) == "dir"
    archive = tar_with(tmp_path / "a.tar.gz", file_member("etc/x"))
    assert source_kind(archive) == "tar"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an image " * 400)
    with pytest.raises(InvalidArgument, match="not a directory, a tar archive or an ext4"):
        source_kind(junk)
    with pytest.raises(NotFound):
        source_kind(tmp_path / "missing")


def test_extract_keeps_modes_owners_and_guest_symlinks(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path / "root.tar.gz",
        file_member("usr/bin/passwd", mode=0o4755),
        file_member("etc/shadow", mode=0o640, uid=42),
        link_member("bin", "usr/bin"),
        link_member("var/run", "/run"),  # absolute: resolved by the guest, fine
        link_member("usr/bin/chfn", "usr/bin/passwd", tarfile.LNKTYPE, 0o4755),
    )
    dest = tmp_path / "tree"
    safe_extract(archive, dest)
    assert (dest / "usr/bin/passwd").stat().st_mode & 0o7777 == 0o4755
    assert (dest / "etc/shadow").stat().st_uid == 42
    assert os.readlink(dest / "var/run") == "/run"
    assert (dest / "usr/bin/chfn").stat().st_ino == (dest / "usr/bin/passwd").stat().st_ino


@pytest.mark.parametrize(
    "members",
    [
        [file_member("../escape")],
        [file_member("/etc/escape")],
        [link_member("evil", "/tmp"), file_member("evil/escape")],
        [link_member("up", ".."), file_member("up/escape")],
        [link_member("hard", "../../etc/passwd", tarfile.LNKTYPE)],
    ],
    ids=["dotdot", "absolute", "through-abs-symlink", "through-rel-symlink", "hardlink-out"],
)
def test_extract_refuses_escapes(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    archive = tar_with(tmp_path / "bad.tar", *members)
    with pytest.raises(InvalidArgument):
        safe_extract(archive, tmp_path / "tree")
    assert not (tmp_path / "escape").exists()
    assert not Path("/tmp/escape").exists()
