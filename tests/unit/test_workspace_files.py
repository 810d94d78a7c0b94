"""What a workspace copy holds (real git), and the tar stream it becomes (real tarfile)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from banger.errors import BangerError, InvalidArgument
from banger.workspace.gitfiles import Member, NotARepository, find_repository, list_workspace
from banger.workspace.tarstream import Progress, tar_chunks


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@e", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    (r / ".gitignore").write_text("*.log\n")
    (r / "a").mkdir()
    (r / "a/tracked.txt").write_text("t")
    (r / "deleted.txt").write_text("d")
    (r / "link").symlink_to("/etc/passwd")  # stored as a link, never followed
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "one")
    (r / "deleted.txt").unlink()
    (r / "untracked.txt").write_text("u")
    (r / "ignored.log").write_text("i")
    (r / "nested").mkdir()
    git(r / "nested", "init", "-q")
    (r / "nested/x").write_text("x")
    os.mkfifo(r / ".git/some-fifo")
    return r


def test_find_repository(repo: Path, tmp_path: Path) -> None:
    assert find_repository(repo / "a") == repo
    assert find_repository(repo / "a/tracked.txt") == repo
    with pytest.raises(NotARepository) as refused:
        find_repository(tmp_path, "export")
    assert refused.value.hint == (  # the command that was run, not always prepare (#21)
        "run it from a repository, or name one: banger workspace export VM PATH"
    )
    with pytest.raises(NotARepository):
        find_repository(tmp_path)
    with pytest.raises(BangerError, match="not found"):
        find_repository(tmp_path / "missing")


def test_listing(repo: Path) -> None:
    listing = list_workspace(repo)
    names = [m.arcname for m in listing.members]
    work = [n for n in names if not n.startswith(".git/") and n != ".git"]
    assert sorted(work) == [".gitignore", "a", "a/tracked.txt", "link", "untracked.txt"]
    assert work.index("a") < work.index("a/tracked.txt")  # parents first
    assert names[0] == ".git" and ".git/HEAD" in names and ".git/index" in names
    assert ".git/some-fifo" not in names
    kinds = {m.arcname: m.kind for m in listing.members}
    assert (kinds["a"], kinds["link"], kinds["a/tracked.txt"]) == ("dir", "symlink", "file")
    assert listing.warnings == ("skipped nested/: a nested git repository",)
    assert listing.total_bytes == sum(m.size for m in listing.members)


def test_a_directory_replaced_by_a_symlink_is_not_followed(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "tracked.txt").write_text("secret")
    (repo / "a/tracked.txt").unlink()
    (repo / "a").rmdir()
    (repo / "a").symlink_to(outside)
    listing = list_workspace(repo)
    assert "a/tracked.txt" not in [m.arcname for m in listing.members]


def test_linked_worktrees_are_refused(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    with pytest.raises(InvalidArgument, match="linked worktrees"):
        list_workspace(tmp_path / "wt")


async def collect(members: list[Member], **kw: object) -> bytes:
    out = bytearray()
    async for chunk in tar_chunks(members, **kw):  # type: ignore[arg-type]
        out += chunk
    return bytes(out)


async def test_tar_stream_round_trips(repo: Path) -> None:
    listing = list_workspace(repo)
    reports: list[Progress] = []
    data = await collect(list(listing.members), progress=reports.append, chunk_size=4096)
    await asyncio.sleep(0)  # progress is delivered through the loop
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        infos = {i.name: i for i in tar.getmembers()}
        assert list(infos) == [m.arcname for m in listing.members]
        assert all(i.uid == 0 and i.gid == 0 and i.uname == "root" for i in infos.values())
        assert infos["link"].issym() and infos["link"].linkname == "/etc/passwd"
        extracted = tar.extractfile("a/tracked.txt")
        assert extracted is not None and extracted.read() == b"t"
    assert reports[-1] == Progress(
        listing.files, listing.files, listing.total_bytes, listing.total_bytes
    )


async def test_tar_stream_errors_and_early_close(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1024 * 1024))
    members = [Member(f"f{i}", big, "file", 1024 * 1024) for i in range(20)]
    stream = tar_chunks(members, chunk_size=64 * 1024, depth=2)
    first = await anext(stream)
    assert first
    await stream.aclose()  # the worker stops instead of blocking forever
    unreadable = [Member("d", big / "below-a-file", "file", 0)]
    with pytest.raises(BangerError, match="cannot read"):
        await collect(unreadable)
