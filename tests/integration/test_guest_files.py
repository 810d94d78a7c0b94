"""The files API against a real sshd on loopback standing in for a guest's (its SFTP server).

Three layers, each real: :class:`banger.guest.files.GuestFiles` over asyncssh's
SFTP client; the daemon's routes (:mod:`banger.daemon.api.vms.files`) served by
uvicorn on a Unix socket and called through :class:`banger.client.BangerClient`;
and ``banger vm cp`` run as a process against that socket. Only the VM lookup
is replaced: "t1" is the loopback sshd.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from banger.client import BangerClient
from banger.daemon.api.errors import install_error_handlers
from banger.daemon.api.vms.files import FilesOpener, files_router
from banger.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from banger.guest.files import TEMP_PREFIX, GuestFiles, open_sftp
from banger.guest.ssh import SSHTarget, open_connection, wait_for_ssh
from banger.paths import Paths
from tests.sshd import (
    Sshd,
    needs_sshd,
    sshd_fixture,  # noqa: F401 (provides the sshd fixture)
)
from tests.support import needs_root, throwaway_user, wait_until

pytestmark = [pytest.mark.root, needs_root, needs_sshd]

NAMES = ["plain.txt", "new\nline", "ünïcödé ☃.bin", " lead space", "quote'\"$x`"]
BANGER = Path(sys.executable).parent / "banger"


@asynccontextmanager
async def guest(target: SSHTarget) -> AsyncIterator[GuestFiles]:
    await wait_for_ssh(target, timeout=30)
    async with open_connection(target) as conn, open_sftp(conn, "t1") as files:
        yield files


async def pieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


async def test_write_read_stat_list_round_trip(sshd: Sshd) -> None:
    root = sshd.dir / "g"
    root.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)  # several SFTP write rounds and a ragged end
    async with guest(sshd.target) as files:
        for name in NAMES:
            entry = await files.write(str(root / name), pieces(data), mode=0o640)
            assert (entry.type, entry.size, entry.mode) == ("file", len(data), 0o640)
        for name in NAMES:
            assert (root / name).read_bytes() == data
            got, chunks = await files.open_read(str(root / name))
            assert got.size == len(data)
            assert b"".join([c async for c in chunks]) == data
        (root / "link").symlink_to("new\nline")
        (root / "sub").mkdir()
        listed = {e.name: e for e in await files.list(str(root))}
        assert set(listed) == {*NAMES, "link", "sub"}
        assert (listed["link"].type, listed["link"].target) == ("symlink", "new\nline")
        assert listed["sub"].type == "dir"
        assert (await files.stat(str(root / "link"), follow=True)).type == "file"
        # a replacement keeps the replaced file's mode unless told
        await files.write(str(root / "plain.txt"), pieces(b"v2"))
        assert (root / "plain.txt").read_bytes() == b"v2"
        assert (root / "plain.txt").stat().st_mode & 0o7777 == 0o640
    assert temps(root) == []


async def test_a_failed_stream_leaves_nothing_under_the_name(sshd: Sshd) -> None:
    root = sshd.dir / "g"
    root.mkdir()
    (root / "kept").write_bytes(b"old")

    async def dies() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        raise ConnectionResetError("the client went away")

    async with guest(sshd.target) as files:
        for name in ("fresh", "kept"):
            with pytest.raises(ConnectionResetError):
                await files.write(str(root / name), dies())
    assert not (root / "fresh").exists()
    assert (root / "kept").read_bytes() == b"old"
    assert temps(root) == []


async def test_mkdir_remove_rename_symlink_and_errors(sshd: Sshd) -> None:
    root = sshd.dir / "g"
    root.mkdir()
    async with guest(sshd.target) as files:
        made = await files.mkdir(str(root / "a/b/c"), parents=True, mode=0o700)
        assert (made.type, made.mode) == ("dir", 0o700)
        await files.mkdir(str(root / "a/b/c"), parents=True)  # mkdir -p: no error
        with pytest.raises(Conflict, match="already exists"):
            await files.mkdir(str(root / "a"), parents=False)
        await files.write(str(root / "a/f"), pieces(b"f"))
        with pytest.raises(Conflict, match="not a directory"):
            await files.mkdir(str(root / "a/f/x"), parents=True)
        with pytest.raises(Conflict, match="not empty"):
            await files.remove(str(root / "a"))
        moved = await files.rename(str(root / "a/f"), str(root / "g\nh"))
        assert moved.name == str(root / "g\nh") and (root / "g\nh").read_bytes() == b"f"
        await files.write(str(root / "other"), pieces(b"o"))
        with pytest.raises(Conflict, match="already exists"):
            await files.rename(str(root / "other"), str(root / "g\nh"))
        await files.rename(str(root / "other"), str(root / "g\nh"), overwrite=True)
        assert (root / "g\nh").read_bytes() == b"o"
        link = await files.symlink(str(root / "ln"), "../elsewhere")
        assert (link.type, link.target) == ("symlink", "../elsewhere")
        await files.remove(str(root / "ln"))
        await files.remove(str(root / "a"), recursive=True)
        assert sorted(p.name for p in root.iterdir()) == ["g\nh"]

        missing = str(root / "nope\nhere")
        with pytest.raises(NotFound) as caught:
            await files.open_read(missing)
        assert caught.value.message == f"{missing} in VM t1: no such file or directory"
        with pytest.raises(NotFound):
            await files.write(str(root / "no/such/dir/f"), pieces(b"x"))
        with pytest.raises(InvalidArgument, match="directory"):
            await files.open_read(str(root))
        os.mkfifo(root / "fifo")
        with pytest.raises(InvalidArgument, match="is a fifo, not a file"):
            await files.open_read(str(root / "fifo"))
        with pytest.raises(InvalidArgument, match="NUL"):
            await files.stat("/a\0b")
        with pytest.raises(InvalidArgument, match="root"):
            await files.remove("/", recursive=True)


async def test_permission_denied_names_the_path(sshd: Sshd) -> None:
    locked = sshd.dir / "locked"
    locked.mkdir(mode=0o700)
    (locked / "secret").write_bytes(b"s")
    sshd.dir.chmod(0o755)  # the user must reach its key files
    for name in ("id_ed25519", "known_hosts", "authorized_keys"):
        (sshd.dir / name).chmod(0o644)
    with throwaway_user("bgf") as user:
        # useradd leaves the account locked ("!"), which sshd refuses without PAM
        subprocess.run(["usermod", "-p", "*", user.name], check=True)
        target = SSHTarget(
            "127.0.0.1", sshd.target.known_hosts, sshd.target.client_key, sshd.port, user.name
        )
        async with guest(target) as files:
            with pytest.raises(PermissionDenied) as caught:
                await files.open_read(str(locked / "secret"))
            assert str(locked / "secret") in caught.value.message
            with pytest.raises(PermissionDenied):
                await files.write("/etc/banger-denied", pieces(b"x"))
    assert not Path("/etc/banger-denied").exists()


# -- the HTTP API, the client and `vm cp` ----------------------------------------------


def loopback_opener(target: SSHTarget) -> FilesOpener:
    @asynccontextmanager
    async def open_files(ref: str) -> AsyncIterator[GuestFiles]:
        if ref != "t1":
            raise NotFound(f"no VM named {ref!r}")
        async with open_connection(target) as conn, open_sftp(conn, ref) as files:
            yield files

    return open_files


@contextmanager
def files_daemon(paths: Paths, target: SSHTarget) -> Iterator[None]:
    """The files routes served on the daemon socket ``paths`` names, in a thread."""
    app = FastAPI()
    install_error_handlers(app, paths)
    app.include_router(files_router(loopback_opener(target)), prefix="/v1/vms")
    paths.daemon_socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = uvicorn.Config(app, uds=str(paths.daemon_socket), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60, "uvicorn serving the files routes")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def api(sshd: Sshd, banger_home: Path) -> Iterator[BangerClient]:
    asyncio.run(wait_for_ssh(sshd.target, timeout=30))
    paths = Paths.from_env()
    with files_daemon(paths, sshd.target):
        yield BangerClient(paths)


def test_client_streams_both_ways_and_rebuilds_errors(
    api: BangerClient, sshd: Sshd, tmp_path: Path
) -> None:
    root = sshd.dir / "g"
    root.mkdir()
    source = tmp_path / "big"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    seen: list[int] = []
    with source.open("rb") as f:
        entry = api.write_file("t1", str(root / "new\nname ☃"), f, mode=0o600, progress=seen.append)
    assert (entry.size, entry.mode) == (source.stat().st_size, 0o600)
    assert seen[-1] == source.stat().st_size
    assert (root / "new\nname ☃").read_bytes() == source.read_bytes()
    with (tmp_path / "back").open("wb") as out:
        count = api.read_file("t1", str(root / "new\nname ☃"), out)
    assert count == source.stat().st_size
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    api.make_dir("t1", str(root / "d/e"))
    api.make_symlink("t1", str(root / "d/ln"), "e")
    assert [(e.name, e.type) for e in api.list_files("t1", str(root / "d"))] == [
        ("e", "dir"),
        ("ln", "symlink"),
    ]
    api.rename_file("t1", str(root / "d/ln"), str(root / "d/ln2"))
    api.remove_file("t1", str(root / "d"), recursive=True)
    assert not (root / "d").exists()

    with pytest.raises(NotFound, match="no VM named 'nope'"):
        api.stat_file("nope", "/")
    with (tmp_path / "x").open("wb") as out, pytest.raises(NotFound, match="no such file"):
        api.read_file("t1", str(root / "missing"), out)
    # refused before the body is read: the client reads the answer, not a broken pipe
    with pytest.raises(NotFound, match="no such file or directory"):
        api.write_file("t1", str(root / "no/dir/f"), b"y" * (8 * 1024 * 1024))
    with pytest.raises(Conflict, match="not empty"):
        api.make_dir("t1", str(root / "full/x"))
        api.remove_file("t1", str(root / "full"))
    with pytest.raises(InvalidArgument):
        api.write_file("t1", str(root / "m"), b"", mode=0o17777)


def test_a_client_that_vanishes_mid_write_leaves_no_file(api: BangerClient, sshd: Sshd) -> None:
    root = sshd.dir / "g"
    root.mkdir()
    (root / "kept").write_bytes(b"old")
    for name in ("fresh", "kept"):
        from urllib.parse import urlencode

        query = urlencode({"path": str(root / name)})
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(api.socket_path))
            sock.sendall(
                f"PUT /v1/vms/t1/files/content?{query} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 50000000\r\n\r\n".encode()
            )
            sock.sendall(b"z" * 3_000_000)

            def writing() -> list[str]:
                return temps(root)

            wait_until(writing, 60, "the temporary file to appear in the guest")
        # the client is gone: the temporary file is removed, the name untouched
        wait_until(lambda: temps(root) == [], 60, "the temporary file to be removed")
    assert not (root / "fresh").exists()
    assert (root / "kept").read_bytes() == b"old"


def cp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BANGER), "vm", "cp", *args], capture_output=True, text=True, timeout=300, check=False
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root``: file content hashes, link targets, dir modes."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + str(path.readlink())
        elif path.is_dir():
            found[rel] = f"dir {path.stat().st_mode & 0o777:o}"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = f"{digest} {path.stat().st_mode & 0o777:o}"
    return found


def test_vm_cp_copies_a_tree_both_ways(api: BangerClient, sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub\ndir").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "ünï ☃").write_bytes(os.urandom(70_000))
    (src / "sub\ndir" / "x").write_bytes(b"x")
    (src / "sub\ndir" / "x").chmod(0o751)
    (src / "link").symlink_to("sub\ndir/x")
    (src / "dangling").symlink_to("/nowhere")
    guest_root = sshd.dir / "g"
    guest_root.mkdir()

    up = cp("--json", str(src), f"t1:{guest_root}")
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert (summary["files"], summary["dirs"], summary["symlinks"]) == (3, 2, 2)
    assert tree_digest(guest_root / "src") == tree_digest(src)

    back = tmp_path / "back"
    down = cp(f"t1:{guest_root}/src", str(back))
    assert down.returncode == 0, down.stderr
    assert tree_digest(back) == tree_digest(src)
    assert "copied 3 files" in down.stdout

    contents = tmp_path / "contents"
    contents.mkdir()
    assert cp(f"t1:{guest_root}/src/.", str(contents)).returncode == 0
    assert tree_digest(contents) == tree_digest(src)
    # a second upload replaces in place (links and files alike)
    again = cp(str(src), f"t1:{guest_root}")
    assert again.returncode == 0, again.stderr


def test_vm_cp_exit_statuses(api: BangerClient, sshd: Sshd, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    cases = [
        (("a", "b"), 2, "exactly one of them names a VM"),
        (("t1:/x", "t1:/y"), 2, "exactly one"),
        (("t1:", str(tmp_path)), 2, "no guest path"),
        ((f"t1:{sshd.dir}/missing\nfile", str(tmp_path)), 3, "no such file or directory"),
        ((str(tmp_path / "missing"), "t1:/tmp"), 3, "no such file or directory (host)"),
        ((str(tmp_path / "f"), f"t1:{sshd.dir}/no/such/"), 3, "no such directory"),
        (("nope:/etc/hostname", str(tmp_path)), 3, "no VM named 'nope'"),
    ]
    for args, status, message in cases:
        result = cp(*args)
        assert result.returncode == status, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
