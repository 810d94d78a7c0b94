"""The files API and ``banger vm cp`` against a real guest (issue #17 items 3, 6 and 7).

One installation and one fast-init VM (``files``) are shared by the module;
host files live in the owner's home, made by root and given to the owner, and
every copy runs through the real CLI → bangerd → held SSH connection → the
guest's own ``sftp-server``. Guest-side checks use ``banger vm ssh``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Banger, banger_env
from tests.support import VENV_BIN, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "files"
HOSTILE_NAMES = ["new\nline", "ünïcödé ☃", " lead and trail ", "quote'\"$x`;", "-dash"]


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        env.banger("vm", "create", "--name", VM, "--init", "fast", "--start")
        yield env


def give(b: Banger, path: Path) -> Path:
    """``path`` and everything under it owned by the owner user (made here as root)."""
    subprocess.run(["chown", "-R", "-h", f"{b.user.uid}:{b.user.gid}", str(path)], check=True)
    return path


def workdir(b: Banger, name: str) -> Path:
    path = b.user.home / name
    path.mkdir()
    return give(b, path)


def guest(b: Banger, script: str, *args: str, check: bool = True) -> str:
    """``sh -c script`` in the guest (arguments as $1…), its stdout."""
    result = b.banger("vm", "ssh", VM, "--", "sh", "-c", script, "sh", *args, check=check)
    return result.stdout


def cp(b: Banger, *args: str) -> subprocess.CompletedProcess[str]:
    return b.banger("vm", "cp", *args, check=False, timeout=1200)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_100_mb_file_round_trips_intact(b: Banger) -> None:
    host = workdir(b, "big")
    source = host / "blob.bin"
    with source.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    give(b, source)
    want = sha256(source)

    up = cp(b, "--json", str(source), f"{VM}:/root/blob.bin")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["bytes"] == 100 << 20
    assert guest(b, 'sha256sum "$1"', "/root/blob.bin").split()[0] == want
    assert guest(b, 'ls -A /root | grep -c "^.banger-upload-" || true').strip() == "0"

    down = cp(b, f"{VM}:/root/blob.bin", str(host / "back.bin"))
    assert down.returncode == 0, down.stderr
    assert sha256(host / "back.bin") == want


def test_a_tree_with_a_symlink_and_hostile_names_both_ways(b: Banger) -> None:
    host = workdir(b, "tree")
    src = host / "src"
    (src / "sub dir").mkdir(parents=True)
    for i, name in enumerate(HOSTILE_NAMES):
        (src / name).write_bytes(f"{i}: {name}".encode())
    (src / "sub dir" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "sub dir" / "run.sh").chmod(0o750)
    (src / "link").symlink_to("sub dir/run.sh")
    give(b, src)

    up = cp(b, "--json", str(src), f"{VM}:/root/")
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert (summary["files"], summary["dirs"], summary["symlinks"]) == (6, 2, 1)
    # the guest's own view: exact names (NUL-separated), the link, the mode
    listed = guest(b, "cd /root/src && find . -mindepth 1 -print0 | sort -z")
    assert set(listed.split("\0")[:-1]) == {
        *(f"./{n}" for n in HOSTILE_NAMES), "./sub dir", "./sub dir/run.sh", "./link",
    }  # fmt: skip
    assert guest(b, "readlink /root/src/link").strip() == "sub dir/run.sh"
    assert guest(b, 'stat -c %a "/root/src/sub dir/run.sh"').strip() == "750"
    assert guest(b, 'cat "$1"', "/root/src/new\nline") == "0: new\nline"

    back = host / "back"
    down = cp(b, f"{VM}:/root/src", str(back))
    assert down.returncode == 0, down.stderr
    for i, name in enumerate(HOSTILE_NAMES):
        assert (back / name).read_bytes() == f"{i}: {name}".encode()
    assert (back / "link").is_symlink() and str((back / "link").readlink()) == "sub dir/run.sh"
    assert (back / "sub dir" / "run.sh").stat().st_mode & 0o777 == 0o750


def test_missing_paths_and_unknown_vms_say_which(b: Banger) -> None:
    host = workdir(b, "missing")
    missing = cp(b, f"{VM}:/root/no such\nfile", str(host))
    assert missing.returncode == 3, missing.stderr
    assert "no such file or directory" in missing.stderr and "no such" in missing.stderr
    nodir = cp(b, str(host), f"{VM}:/root/no/such/dir/x")
    assert nodir.returncode == 3 and "no such directory" in nodir.stderr, nodir.stderr
    unknown = cp(b, "nope:/etc/hostname", str(host))
    assert unknown.returncode == 3 and "no VM named 'nope'" in unknown.stderr
    both = cp(b, "a", "b")
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_permission_denied_in_the_guest(b: Banger) -> None:
    # banger logs in as root, whom file modes do not stop: an immutable directory does
    guest(b, "mkdir -p /root/locked && echo old > /root/locked/f && chattr +i /root/locked")
    host = workdir(b, "denied")
    (host / "f").write_text("new")
    give(b, host / "f")
    try:
        denied = cp(b, str(host / "f"), f"{VM}:/root/locked/f")
        assert denied.returncode == 9, denied.stderr
        assert "/root/locked" in denied.stderr and "permission denied" in denied.stderr
        assert guest(b, "cat /root/locked/f") == "old\n"
        assert guest(b, "ls -A /root/locked") == "f\n"
    finally:
        guest(b, "chattr -i /root/locked", check=False)


VANISHING_CLIENT = """
import socket, sys
from urllib.parse import urlencode
from banger.paths import Paths
sock = socket.socket(socket.AF_UNIX)
sock.connect(str(Paths.from_env().daemon_socket))
query = urlencode({"path": sys.argv[2]})
sock.sendall(f"PUT /v1/vms/{sys.argv[1]}/files/content?{query} HTTP/1.1\\r\\n"
             "Host: bangerd\\r\\nContent-Length: 200000000\\r\\n\\r\\n".encode())
for _ in range(8):
    sock.sendall(b"z" * (1 << 20))
print("sent", flush=True)
sys.stdin.read()  # held open until the test has seen the upload begin
"""


def test_a_client_that_vanishes_mid_write_leaves_no_file(b: Banger) -> None:
    guest(b, "mkdir -p /root/vanish && echo old > /root/vanish/kept")
    for name in ("fresh", "kept"):
        argv = [str(VENV_BIN / "python"), "-c", VANISHING_CLIENT, VM, f"/root/vanish/{name}"]
        with subprocess.Popen(
            b.as_owner(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as client:
            try:
                assert client.stdout is not None and client.stdout.readline() == "sent\n"

                def uploading() -> bool:
                    return ".banger-upload-" in guest(b, "ls -A /root/vanish")

                wait_until(uploading, 300, "the upload's temporary file to appear in the guest")
            finally:
                client.kill()  # gone mid-body, no goodbye

        def cleaned() -> str:
            listing = guest(b, "ls -A /root/vanish")
            return "" if ".banger-upload-" in listing else listing

        listing = wait_until(cleaned, 300, "the temporary file to be removed")
        assert listing == "kept\n"
    assert guest(b, "cat /root/vanish/kept") == "old\n"


def test_a_stopped_vm_is_a_conflict(b: Banger) -> None:
    """Last: stops the module's VM."""
    b.banger("vm", "stop", VM)
    host = workdir(b, "stopped")
    result = cp(b, f"{VM}:/etc/hostname", str(host))
    assert result.returncode == 4, result.stderr
    assert f"VM {VM} is stopped, not running" in result.stderr
