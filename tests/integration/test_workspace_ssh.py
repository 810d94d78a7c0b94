"""Workspace prepare/export against a real sshd on loopback standing in for the guest's.

The "guest root" is a temp directory: the guest side runs the very scripts it
runs in a VM (Debian's sh, tar, git), through the same asyncssh channel code.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import psutil
import pytest

from banger.errors import Conflict, InvalidArgument
from banger.guest.ssh import open_connection, wait_for_ssh
from banger.workspace import (
    GuestCommandFailed,
    NotARepository,
    Progress,
    SSHGuestShell,
    export_workspace,
    prepare_workspace,
)
from tests.sshd import (
    Sshd,
    needs_sshd,
    sshd_fixture,  # noqa: F401 (provides the sshd fixture)
)
from tests.support import needs_root

pytestmark = [
    pytest.mark.root,
    needs_root,
    needs_sshd,
]

BINARY = bytes(range(256)) * 4


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, input=input
    ).stdout.decode()


@pytest.fixture
def host_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host user's git config: only what the test sets."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Host User\n\temail = host@example.org\n[init]\n\tdefaultBranch = main\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return home


@pytest.fixture
def repo(tmp_path: Path, host_home: Path) -> Path:
    r = tmp_path / "host" / "my repo"
    r.mkdir(parents=True)
    git(r, "init", "-q")
    (r / ".gitignore").write_text("*.log\nbuild/\n")
    (r / "README.md").write_text("# demo\n")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "first")
    (r / "src").mkdir()
    (r / "src/app.py").write_text("print('hi')\n")
    (r / "bin").mkdir()
    (r / "bin/run.sh").write_text("#!/bin/sh\necho run\n")
    (r / "bin/run.sh").chmod(0o755)
    (r / "data.bin").write_bytes(BINARY)
    (r / "file with spaces.txt").write_text("spaces\n")
    (r / "link").symlink_to("README.md")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "second")
    git(r, "switch", "-q", "-c", "feature")
    (r / "feature.txt").write_text("feature\n")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "on feature")
    git(r, "switch", "-q", "main")
    (r / "src/app.py").write_text("print('hello')\n")
    git(r, "commit", "-q", "-am", "third")
    (r / "notes.txt").write_text("untracked, not ignored\n")
    (r / "debug.log").write_text("ignored\n")
    (r / "build").mkdir()
    (r / "build/out.o").write_bytes(b"\x7fELF")
    (r / "gone.txt").write_text("tracked, then deleted\n")
    git(r, "add", "gone.txt")
    git(r, "commit", "-q", "-m", "fourth")
    (r / "gone.txt").unlink()
    return r


@pytest.fixture
async def shell(sshd: Sshd) -> AsyncIterator[SSHGuestShell]:
    await wait_for_ssh(sshd.target, timeout=30)
    async with open_connection(sshd.target) as conn:
        yield SSHGuestShell(conn)


@pytest.fixture
def guest_home(tmp_path: Path) -> Path:
    home = tmp_path / "guest-root"
    home.mkdir()
    return home


async def in_guest(shell: SSHGuestShell, cwd: Path, command: str) -> str:
    result = await shell.run(f"set -eu\ncd -- {shlex.quote(str(cwd))}\n{command}")
    assert result.exit_status == 0, result.err
    return result.out


def tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] == (".git",):
            continue
        dirnames[:] = [d for d in dirnames if not (rel == Path(".") and d == ".git")]
        out |= {(rel / n).as_posix() for n in filenames}
        out |= {(rel / d).as_posix() + "/" for d in dirnames}
    return out


async def test_prepare_copies_exactly_the_workspace(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    reports: list[Progress] = []
    result = await prepare_workspace(
        shell, repo / "src", guest_home=PurePosixPath(guest_home), progress=reports.append
    )
    dest = guest_home / "my repo"
    assert result.dest == PurePosixPath(dest) and result.repo == repo
    assert tree(dest) == {
        ".gitignore",
        "README.md",
        "bin/",
        "bin/run.sh",
        "data.bin",
        "file with spaces.txt",
        "link",
        "notes.txt",
        "src/",
        "src/app.py",
    }
    assert (dest / "data.bin").read_bytes() == BINARY
    assert os.readlink(dest / "link") == "README.md"
    assert stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "README.md").stat().st_mode) == 0o644
    assert (dest / ".git").is_dir() and (dest / "src").stat().st_uid == 0
    for args in (
        ("log", "--all", "--format=%H %s"),
        ("branch", "--format=%(refname) %(objectname)"),
        ("symbolic-ref", "HEAD"),
    ):
        assert git(dest, *args) == git(repo, *args)
    assert git(dest, "status", "--porcelain") == git(repo, "status", "--porcelain")
    assert reports and reports[-1].files_done == reports[-1].files_total == result.files
    assert reports[-1].bytes_done == result.bytes
    assert sorted(p.name for p in guest_home.iterdir()) == ["my repo"]  # no temporaries left

    # re-running updates the guest copy (and drops what only the old copy had: with
    # --force, since a file made in the guest is work the host never got)
    (dest / "stale.txt").write_text("only in the old copy")
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "fifth")
    await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home), force=True)
    assert (dest / "later.txt").read_text() == "later\n"
    assert not (dest / "stale.txt").exists()
    assert git(dest, "log", "-1", "--format=%s") == "fifth\n"
    assert sorted(p.name for p in guest_home.iterdir()) == ["my repo"]


async def test_export_brings_commits_and_uncommitted_changes_back(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    result = await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home))
    dest = Path(result.dest)
    ident = "git -c user.name=Guest -c user.email=guest@example.org"
    await in_guest(
        shell,
        dest,
        f"echo 'more docs' >> README.md\n{ident} commit -q -am 'guest commit'\n"
        "echo \"print('changed')\" > src/app.py\necho new > 'new file.txt'\n",
    )
    guest_status = await in_guest(shell, dest, "git status --porcelain; git rev-parse HEAD")
    host_before = {
        "status": git(repo, "status", "--porcelain"),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "index": git(repo, "ls-files", "-s"),
        "app": (repo / "src/app.py").read_text(),
    }
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    exported = await export_workspace(shell, repo, vm="testvm", guest_path=result.dest, now=when)
    assert exported.branch == "banger/testvm" and exported.snapshot
    assert [c.split(" ", 1)[1] for c in exported.commits] == [
        "banger: uncommitted changes from testvm at 2024-05-01 12:30:00 UTC",
        "guest commit",
    ]
    # the host's own uncommitted state travelled with the copy, so it comes back too
    assert set(exported.files_changed) == {
        "README.md",
        "src/app.py",
        "new file.txt",
        "notes.txt",
        "gone.txt",
    }
    assert "5 files changed" in exported.diffstat
    assert exported.bytes > 0
    assert git(repo, "rev-parse", "banger/testvm").strip() == exported.commit
    assert git(repo, "show", "banger/testvm:new file.txt") == "new\n"
    assert git(repo, "show", "banger/testvm:src/app.py") == "print('changed')\n"
    assert git(repo, "show", "banger/testvm~1:README.md").endswith("more docs\n")
    # the host's working tree, index and current branch are untouched
    assert host_before == {
        "status": git(repo, "status", "--porcelain"),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "index": git(repo, "ls-files", "-s"),
        "app": (repo / "src/app.py").read_text(),
    }
    # ... and so is the guest's (its uncommitted changes stay uncommitted)
    assert await in_guest(shell, dest, "git status --porcelain; git rev-parse HEAD") == (
        guest_status
    )
    assert "refs/banger/export" not in git(dest, "for-each-ref")
    assert not [p for p in (dest / ".git").iterdir() if p.name.startswith("banger-")]

    with pytest.raises(Conflict, match="banger/testvm already exists"):
        await export_workspace(shell, repo, vm="testvm", guest_path=result.dest)
    await in_guest(shell, dest, f"git add -A\n{ident} commit -q -m 'commit the rest'")
    again = await export_workspace(shell, repo, vm="testvm", guest_path=result.dest, force=True)
    assert not again.snapshot
    assert [c.split(" ", 1)[1] for c in again.commits] == ["commit the rest", "guest commit"]
    assert git(repo, "rev-parse", "banger/testvm").strip() == again.commit

    # nothing new: the branch simply names a commit the host already has
    plain = await export_workspace(shell, repo, vm="x", guest_path=result.dest, branch="copy")
    assert plain.bytes == 0 and plain.commit == again.commit and plain.commits == ()
    assert git(repo, "rev-parse", "copy").strip() == again.commit

    with pytest.raises(Conflict, match="checked out"):
        await export_workspace(
            shell, repo, vm="x", guest_path=result.dest, branch="main", force=True
        )
    with pytest.raises(InvalidArgument, match="branch"):
        await export_workspace(shell, repo, vm="x", guest_path=result.dest, branch="bad..name")


async def test_re_prepare_refuses_to_drop_work_that_was_never_exported(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    """Issue #21 item 4: guest commits and changes are named, not silently replaced."""
    home = PurePosixPath(guest_home)
    result = await prepare_workspace(shell, repo, guest_home=home, vm="vm1")
    dest = Path(result.dest)
    await prepare_workspace(shell, repo, guest_home=home, vm="vm1")  # nothing new: fine

    ident = "git -c user.name=Guest -c user.email=guest@example.org"
    await in_guest(
        shell,
        dest,
        f"echo more >> README.md\n{ident} commit -q -am 'guest work'\n"
        "echo edited > 'file with spaces.txt'\necho new > fresh.txt\n",
    )
    before = git(dest, "log", "-1", "--format=%H")
    with pytest.raises(Conflict) as refused:
        await prepare_workspace(shell, repo, guest_home=home, vm="vm1")
    message = refused.value.message
    assert "\n" not in message
    assert f"vm1:{dest} has work that was never exported" in message, message
    assert f"1 commit ({before[:7]}" in message and "guest work)" in message, message
    assert "2 changed files (" in message and "fresh.txt" in message, message
    assert "file with spaces.txt" in message, message
    assert "workspace export vm1" in (refused.value.hint or "")
    # nothing was replaced
    assert git(dest, "log", "-1", "--format=%H") == before
    assert (dest / "fresh.txt").read_text() == "new\n"

    # exported: the host has it all, so a prepare may replace it
    await export_workspace(shell, repo, vm="vm1", guest_path=result.dest)
    await prepare_workspace(shell, repo, guest_home=home, vm="vm1")
    assert not (dest / "fresh.txt").exists()

    (dest / "scratch.txt").write_text("after the prepare\n")
    with pytest.raises(Conflict, match=r"1 changed file \(scratch.txt\)"):
        await prepare_workspace(shell, repo, guest_home=home, vm="vm1")
    await prepare_workspace(shell, repo, guest_home=home, vm="vm1", force=True)
    assert not (dest / "scratch.txt").exists()

    # a directory banger did not prepare is not replaced either
    own = guest_home / "own"
    own.mkdir()
    (own / "keep.txt").write_text("mine\n")
    with pytest.raises(Conflict, match="is not a copy banger prepared"):
        await prepare_workspace(shell, repo, dest=str(own), vm="vm1")
    assert (own / "keep.txt").read_text() == "mine\n"


async def test_an_initialised_submodule_comes_with_its_working_tree(
    repo: Path, shell: SSHGuestShell, guest_home: Path, tmp_path: Path
) -> None:
    """Issue #21 item 7: submodules no longer arrive empty."""
    lib = tmp_path / "lib-upstream"
    lib.mkdir()
    git(lib, "init", "-q")
    (lib / "lib.txt").write_text("from the submodule\n")
    git(lib, "add", ".")
    git(lib, "commit", "-q", "-m", "lib first")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add the submodule")
    (repo / "vendor/lib/untracked.txt").write_text("new in the submodule\n")

    result = await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home))
    dest = Path(result.dest)
    assert (dest / "vendor/lib/lib.txt").read_text() == "from the submodule\n"
    assert (dest / "vendor/lib/untracked.txt").read_text() == "new in the submodule\n"
    # its history came too (the superproject's .git/modules): git works inside it
    assert await in_guest(shell, dest / "vendor/lib", "git log --format=%s") == "lib first\n"
    assert await in_guest(shell, dest, "git submodule status --cached | cut -c2-41") == (
        git(repo, "rev-parse", "HEAD:vendor/lib")
    )


async def test_export_from_a_guest_without_commits_fails_clearly(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    empty = guest_home / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    with pytest.raises(GuestCommandFailed, match="has no commit to export from"):
        await export_workspace(shell, repo, vm="v", guest_path=PurePosixPath(empty))


async def test_prepare_outside_a_repository_is_refused(
    tmp_path: Path, shell: SSHGuestShell, host_home: Path
) -> None:
    with pytest.raises(NotARepository, match="not inside a git repository"):
        await prepare_workspace(shell, host_home, guest_home=PurePosixPath(tmp_path))


async def test_a_failed_unpack_keeps_the_old_copy(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home))
    (guest_home / ".my repo.banger-new.leftover").mkdir()  # from a transfer cut short
    (repo / "notes.txt").write_text("changed on the host\n")
    # a destination under a file cannot be created: the guest step fails, nothing swapped
    (guest_home / "a-file").write_text("")
    with pytest.raises(GuestCommandFailed, match="unpacking the workspace"):
        await prepare_workspace(shell, repo, dest=str(guest_home / "a-file" / "sub"))
    assert (guest_home / "my repo/notes.txt").read_text() == "untracked, not ignored\n"
    await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home))
    assert not (guest_home / ".my repo.banger-new.leftover").exists()


@pytest.mark.slow
async def test_prepare_streams_without_buffering(
    repo: Path, shell: SSHGuestShell, guest_home: Path
) -> None:
    size = 200 * 1024 * 1024
    with open(repo / "big.bin", "wb") as f:
        f.truncate(size)  # sparse on disk, 200 MiB of zeros in the stream
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.01):
            peak = max(peak, me.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = await prepare_workspace(shell, repo, guest_home=PurePosixPath(guest_home))
    finally:
        stop.set()
        await asyncio.to_thread(sampler.join)
    assert (Path(result.dest) / "big.bin").stat().st_size == size
    assert result.bytes >= size
    assert peak - baseline < 64 * 1024 * 1024, f"RSS grew by {(peak - baseline) >> 20} MiB"
