"""``[[file_sync]]`` and the git identity applied to a running guest over SFTP (issue #18 item 4).

The guest is a real sshd on loopback (:mod:`tests.sshd`), its work disk a
temporary directory standing in for ``/root``; the owner's home another one.
Nothing is mocked: plan, git, SFTP and the renames are the real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import pytest

from banger.config.file_sync import FileSync
from banger.daemon.vms.live_sync import LiveSync, sync_running_guest
from banger.disk.gitidentity import NO_IDENTITY_NOTICE
from banger.disk.synced import SyncedRecord
from banger.errors import BangerError
from banger.guest.files import TEMP_PREFIX
from banger.guest.ssh import open_connection, wait_for_ssh
from tests.sshd import (
    Sshd,
    needs_sshd,
    sshd_fixture,  # noqa: F401 (provides the sshd fixture)
)
from tests.support import needs_root, throwaway_user

pytestmark = [pytest.mark.root, needs_root, needs_sshd]

ODD = ["new\nline", "quote\"d 'x'"]


def entry(home: Path, host: str, guest: str, mode: str | None = None) -> FileSync:
    raw = {"host": host, "guest": guest} | ({"mode": mode} if mode else {})
    return FileSync.model_validate(raw, context={"home": home})


def write(path: Path, data: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    path.chmod(mode)
    return path


def git_set(config: Path, key: str, value: str) -> None:
    subprocess.run(["git", "config", "--file", str(config), key, value], check=True)


def git_get(config: Path, key: str) -> str:
    out = subprocess.run(
        ["git", "config", "--file", str(config), "--get", key],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.rstrip("\n")


def mode_of(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and, for files, content (for "nothing changed")."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            found[str(p.relative_to(root))] = (mode_of(p), data)
    return found


def temps(root: Path) -> list[str]:
    return [k for k in tree(root) if Path(k).name.startswith(TEMP_PREFIX)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def guest_root(sshd: Sshd) -> Path:
    g = sshd.dir / "g"
    g.mkdir()
    return g


@asynccontextmanager
async def connected(sshd: Sshd) -> AsyncIterator[asyncssh.SSHClientConnection]:
    await wait_for_ssh(sshd.target, timeout=30)
    async with open_connection(sshd.target) as conn:
        yield conn


async def sync(sshd: Sshd, entries: list[FileSync], home: Path, guest_root: Path) -> LiveSync:
    async with connected(sshd) as conn:
        return await sync_running_guest(conn, entries, home=home, guest_root=str(guest_root))


async def test_files_trees_modes_odd_names_and_the_identity_merged(
    sshd: Sshd, home: Path, guest_root: Path
) -> None:
    write(home / ".netrc", "machine x login y\n", 0o644)
    write(home / "dots/a.conf", "a\n", 0o640)
    write(home / "dots/sub/tool", "#!/bin/sh\n", 0o755)
    (home / "dots/sub").chmod(0o750)
    for name in ODD:
        write(home / "dots/odd" / name, name, 0o600)
    git_set(home / ".gitconfig", "user.name", "Ada Owner")
    git_set(home / ".gitconfig", "user.email", "ada@example.test")
    # the guest's own .gitconfig: its other keys stay, its identity is replaced
    gitconfig = write(guest_root / ".gitconfig", "[core]\n\teditor = vim\n", 0o600)
    git_set(gitconfig, "user.name", "Someone Else")
    git_set(gitconfig, "alias.st", "status")

    done = await sync(
        sshd,
        [entry(home, "~/.netrc", "~/.netrc", "0600"), entry(home, "~/dots", "/root/.dots")],
        home,
        guest_root,
    )

    assert (guest_root / ".netrc").read_text() == "machine x login y\n"
    assert mode_of(guest_root / ".netrc") == 0o600  # the entry's mode, not the host file's
    assert (mode_of(guest_root / ".dots"), mode_of(guest_root / ".dots/sub")) == (0o755, 0o750)
    assert mode_of(guest_root / ".dots/a.conf") == 0o640
    assert (guest_root / ".dots/sub/tool").read_text() == "#!/bin/sh\n"
    assert mode_of(guest_root / ".dots/sub/tool") == 0o755
    for name in ODD:  # names a disk image cannot hold: written all the same
        assert (guest_root / ".dots/odd" / name).read_text() == name
        assert (guest_root / ".dots/odd" / name).stat().st_uid == 0
    assert git_get(gitconfig, "user.name") == "Ada Owner"
    assert git_get(gitconfig, "user.email") == "ada@example.test"
    assert (git_get(gitconfig, "core.editor"), git_get(gitconfig, "alias.st")) == ("vim", "status")
    assert mode_of(gitconfig) == 0o644
    record = SyncedRecord.from_bytes((guest_root / ".banger/synced.json").read_bytes())
    assert set(record.files) == {"/.netrc", "/.dots/a.conf", "/.dots/sub/tool"}
    assert record.git_identity == "/.gitconfig"
    assert mode_of(guest_root / ".banger") == 0o700
    assert (done.files, done.dirs, done.git_identity, done.removed) == (5, 3, ".gitconfig", ())
    assert done.summary == "5 synced files, git identity"
    assert done.warnings == ()
    assert len(done.notices) == 2 and all("cannot hold" in n for n in done.notices)
    assert temps(guest_root) == []


async def test_replaced_files_and_a_removed_entry(sshd: Sshd, home: Path, guest_root: Path) -> None:
    write(home / "a", "new a\n")
    write(home / "b", "b\n")
    write(guest_root / "a", "old a, a longer text than the new one\n", 0o666)
    (guest_root / "elsewhere").write_text("not to be written through\n")
    (guest_root / "b").symlink_to(guest_root / "elsewhere")
    entries = [entry(home, "~/a", "~/a", "0640"), entry(home, "~/b", "~/b")]
    first = await sync(sshd, entries, home, guest_root)
    assert (guest_root / "a").read_text() == "new a\n"  # the old content is gone
    assert mode_of(guest_root / "a") == 0o640
    assert not (guest_root / "b").is_symlink()  # replaced, not written through
    assert (guest_root / "b").read_text() == "b\n"
    assert (guest_root / "elsewhere").read_text() == "not to be written through\n"
    assert first.summary == "2 synced files"
    assert NO_IDENTITY_NOTICE in first.notices  # the home has no git identity
    assert not (guest_root / ".gitconfig").exists()
    # the same again (idempotent), then with ~/b's entry gone: banger takes its file away
    write(home / "a", "newer a\n")
    await sync(sshd, entries, home, guest_root)
    again = await sync(sshd, entries[:1], home, guest_root)
    assert (guest_root / "a").read_text() == "newer a\n"
    assert not (guest_root / "b").exists()
    assert again.removed == ("b",)
    assert again.summary == "1 synced file, 1 stale file removed"
    assert SyncedRecord.from_bytes((guest_root / ".banger/synced.json").read_bytes()).files == (
        "/a",
    )
    assert temps(guest_root) == []


async def test_identity_merged_into_the_gitconfig_file_sync_writes(
    sshd: Sshd, home: Path, guest_root: Path
) -> None:
    git_set(home / ".gitconfig", "user.email", "ada@example.test")
    git_set(home / ".gitconfig", "alias.co", "checkout")
    write(guest_root / ".gitconfig", "[guest]\n\tonly = 1\n")
    done = await sync(sshd, [entry(home, "~/.gitconfig", "~/.gitconfig")], home, guest_root)
    gitconfig = guest_root / ".gitconfig"
    assert git_get(gitconfig, "alias.co") == "checkout"
    assert git_get(gitconfig, "user.email") == "ada@example.test"
    assert "[guest]" not in gitconfig.read_text()  # the synced file replaced the guest's
    assert mode_of(gitconfig) == 0o644
    assert done.summary == "1 synced file, git identity"
    record = SyncedRecord.from_bytes((guest_root / ".banger/synced.json").read_bytes())
    assert (record.files, record.git_identity) == (("/.gitconfig",), "/.gitconfig")


async def test_nothing_to_do(sshd: Sshd, home: Path, guest_root: Path) -> None:
    done = await sync(sshd, [entry(home, "~/missing", "~/missing")], home, guest_root)
    assert (done.files, done.dirs, done.git_identity, done.removed) == (0, 0, None, ())
    assert done.warnings == ("file_sync: skipped ~/missing: not found",)
    assert done.notices == (NO_IDENTITY_NOTICE,)
    assert done.summary == "0 synced files"
    # only the (empty) record, as the batch writes it
    assert set(tree(guest_root)) == {".banger", ".banger/synced.json"}
    assert SyncedRecord.from_bytes((guest_root / ".banger/synced.json").read_bytes()) == (
        SyncedRecord()
    )


async def test_a_host_side_error_fails_with_nothing_written(
    sshd: Sshd, home: Path, guest_root: Path
) -> None:
    write(home / "ok", "ok\n")
    (home / "loop").symlink_to(home / "loop")
    write(guest_root / "ok", "before\n")
    before = tree(guest_root)
    with pytest.raises(BangerError, match=r"cannot read ~/loop: Too many levels of symbolic"):
        await sync(
            sshd, [entry(home, "~/ok", "~/ok"), entry(home, "~/loop", "~/l")], home, guest_root
        )
    assert tree(guest_root) == before


# Run as an unprivileged owner: root reads a 0000 file, the owner does not.
_AS_OWNER = """
import asyncio, sys
from pathlib import Path
from banger.config.file_sync import FileSync
from banger.daemon.vms.live_sync import sync_running_guest
from banger.errors import BangerError
from banger.guest.ssh import SSHTarget, open_connection

home, root, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
target = SSHTarget("127.0.0.1", home / "known_hosts", home / "id", port=port)
entries = [
    FileSync.model_validate({"host": f"~/{n}", "guest": f"~/{n}"}, context={"home": home})
    for n in ("ok", "secret")
]

async def main() -> None:
    async with open_connection(target) as conn:
        await sync_running_guest(conn, entries, home=home, guest_root=root)

try:
    asyncio.run(main())
except BangerError as exc:
    sys.exit(f"error: {exc.message}")
"""


def test_an_unreadable_host_file_fails_with_nothing_written(sshd: Sshd, guest_root: Path) -> None:
    write(guest_root / "ok", "before\n")
    before = tree(guest_root)
    with throwaway_user() as user:
        for name, src in (("known_hosts", "known_hosts"), ("id", "id_ed25519")):
            shutil.copy(sshd.dir / src, user.home / name)
            os.chown(user.home / name, user.uid, user.gid)
        write(user.home / "ok", "ok\n")
        write(user.home / "secret", "token\n", 0)
        result = subprocess.run(
            [sys.executable, "-c", _AS_OWNER, str(user.home), str(guest_root), str(sshd.port)],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            env={"HOME": str(user.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "file_sync: cannot read ~/secret: Permission denied" in result.stderr
    assert tree(guest_root) == before


async def test_a_file_in_the_way_of_a_synced_directory_is_replaced(
    sshd: Sshd, home: Path, guest_root: Path
) -> None:
    write(home / "conf/x", "x\n")
    (home / "conf").chmod(0o700)
    write(guest_root / ".conf", "a file where the directory goes\n")
    await sync(sshd, [entry(home, "~/conf", "~/.conf")], home, guest_root)
    assert mode_of(guest_root / ".conf") == 0o700  # a directory, with the host's mode
    assert (guest_root / ".conf/x").read_text() == "x\n"
