"""Another local user squats the owner's runtime directory before banger uses it.

Without ``XDG_RUNTIME_DIR`` (su sessions, cron, some containers) the runtime
directory falls back to ``/tmp/banger-<uid>``: a name anyone can create first.
Whoever owns that directory can swap the sockets inside it: a fake daemon
would receive the owner's requests and answer ``vm ssh`` with its own host
and key. So the daemon refuses to serve from a directory it does not own (or
that others may write), and the CLI refuses to talk through one.

The other way round, an ordinary user points the CLI at someone else's
runtime directory (``BANGER_RUNTIME_DIR``, ``BANGER_HOME``, ``XDG_RUNTIME_DIR``):
root's 0700 one, or another user's with their bangerd running in it. The
connect would fail with EACCES, which looked like "bangerd is not running":
the CLI started a daemon into it and showed that daemon's traceback. Now it
is one line, ``permission denied: <dir> belongs to <user>``, exit 2, with no
process started and nothing written; ``banger doctor`` says the same as its
"runtime directory" check and probes no socket there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.install_meta import write_metadata
from tests.reliability_counts import ReliabilityCounts
from tests.support import VENV_BIN, User, needs_root, short_tmpdir, throwaway_user, wait_until

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def owner() -> Iterator[User]:
    with throwaway_user("bgo") as user:
        yield user


@pytest.fixture
def stranger() -> Iterator[User]:
    with throwaway_user("bgx") as user:
        yield user


@pytest.fixture
def fallback_dir(owner: User) -> Iterator[Path]:
    path = Path(f"/tmp/banger-{owner.uid}")
    assert not path.exists() and not path.is_symlink(), f"{path} exists before the test"
    try:
        yield path
    finally:
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def as_user(
    user: User, *argv: str, timeout: float = 20, **env: str
) -> subprocess.CompletedProcess[str]:
    """``argv`` as ``user``; a daemon that wrongly starts serving is killed at ``timeout``."""
    clean = {"HOME": str(user.home), "PATH": f"{VENV_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    clean.update(env)
    return subprocess.run(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
         "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv],
        capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def squat(stranger: User, path: Path, mode: int = 0o777) -> None:
    path.mkdir(mode=mode)
    path.chmod(mode)
    os.chown(path, stranger.uid, stranger.gid)


def test_daemon_refuses_a_runtime_dir_owned_by_someone_else(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    squat(stranger, fallback_dir)
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    refusal = f"bangerd: permission denied: {fallback_dir} belongs to {stranger.name}"
    assert refusal in result.stderr.splitlines(), result.stderr
    assert f"remove {fallback_dir} if you did not create it" in result.stderr, result.stderr
    assert not (fallback_dir / "bangerd.sock").exists()


def test_daemon_refuses_a_runtime_dir_others_can_write(
    owner: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    squat(owner, fallback_dir, 0o777)  # the owner's own, but world-writable
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "writable by other users" in result.stderr, result.stderr


def test_daemon_refuses_a_symlinked_runtime_dir(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    target = stranger.home / "trap"
    target.mkdir()
    os.chown(target, owner.uid, owner.gid)  # even a target the owner owns: the link is theirs
    fallback_dir.symlink_to(target)
    result = as_user(owner, str(VENV_BIN / "bangerd"))
    reliability_counts.hostile()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "symbolic link" in result.stderr, result.stderr
    assert list(target.iterdir()) == []


def test_cli_will_not_talk_to_a_squatters_socket(
    owner: User, stranger: User, fallback_dir: Path, reliability_counts: ReliabilityCounts
) -> None:
    """The squatter runs a fake daemon first: the owner's CLI must not even connect."""
    squat(stranger, fallback_dir, 0o755)
    sock_path = fallback_dir / "bangerd.sock"
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connected = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = fake.accept()
            connected.set()
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    try:
        fake.bind(str(sock_path))
        os.chown(sock_path, stranger.uid, stranger.gid)
        sock_path.chmod(0o666)
        fake.listen(8)
        thread.start()
        result = as_user(owner, str(VENV_BIN / "banger"), "vm", "list", BANGER_NO_AUTOSTART="1")
        reliability_counts.hostile()
        # A connection the thread has not accepted yet still waits in the backlog:
        # take it here, so no connect can go unseen whatever the scheduling.
        fake.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            fake.accept()[0].close()
            connected.set()
    finally:
        with contextlib.suppress(OSError):
            fake.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        fake.close()
        if thread.is_alive():
            thread.join(60)  # a hang bound; after it, the thread has said all it saw
    assert not thread.is_alive(), "the fake daemon's accept() never returned"
    assert not connected.is_set(), "the CLI connected to a socket in a squatted directory"
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first == f"error: permission denied: {fallback_dir} belongs to {stranger.name}"


# -- another user's runtime directory -------------------------------------------------

OWN_DIR_HINT = (
    "hint: banger needs a runtime directory of your own: point BANGER_RUNTIME_DIR "
    "(or BANGER_HOME, XDG_RUNTIME_DIR) at one, or unset it"
)


@dataclass(frozen=True)
class Elsewhere:
    """An environment that names someone else's runtime directory, and whose it is."""

    env: dict[str, str]
    #: the directory the refusal names: the runtime directory, or the one above it in the way
    directory: Path
    owner: str


@pytest.fixture(scope="module")
def neighbour() -> Iterator[tuple[User, Path]]:
    """Another user with their own bangerd running (auto-started by their CLI): its runtime dir."""
    with throwaway_user("bgn") as user:
        banger_home = user.home / "bh"
        started = as_user(user, str(VENV_BIN / "banger"), "vm", "list", timeout=60,
                          BANGER_HOME=str(banger_home))  # fmt: skip
        assert started.returncode == 0, started.stderr
        run = banger_home / "run"
        assert (run / "bangerd.sock").is_socket() and run.stat().st_mode & 0o777 == 0o700
        private = user.home / "private"  # a home as Debian 12 makes them: 0700
        private.mkdir(mode=0o700)
        os.chown(private, user.uid, user.gid)
        try:
            yield user, run
        finally:
            # Gone before throwaway_user's userdel, which fails on a live process.
            stop(int((run / "bangerd.pid").read_text()))


@pytest.fixture(scope="module")
def roots_dir() -> Iterator[Path]:
    """A root-owned 0700 directory, like root's own XDG_RUNTIME_DIR (/run/user/0)."""
    with short_tmpdir("bg-root-") as path:
        assert path.stat().st_uid == 0 and path.stat().st_mode & 0o777 == 0o700
        yield path


ELSEWHERE: dict[str, Callable[[Path, tuple[User, Path]], Elsewhere]] = {
    "root's dir as BANGER_RUNTIME_DIR": lambda root, _n: Elsewhere(
        {"BANGER_RUNTIME_DIR": str(root)}, root, "root"
    ),
    # $XDG_RUNTIME_DIR/banger cannot even be looked at: the refusal names root's dir above it
    "root's dir as XDG_RUNTIME_DIR": lambda root, _n: Elsewhere(
        {"XDG_RUNTIME_DIR": str(root)}, root, "root"
    ),
    "a running neighbour's dir as BANGER_RUNTIME_DIR": lambda _r, n: Elsewhere(
        {"BANGER_RUNTIME_DIR": str(n[1])}, n[1], n[0].name
    ),
    "a neighbour's BANGER_HOME": lambda _r, n: Elsewhere(
        {"BANGER_HOME": str(n[1].parent)}, n[1], n[0].name
    ),
    # its run/ cannot even be looked at: the refusal names the 0700 directory in the way
    "a neighbour's private dir as BANGER_HOME": lambda _r, n: Elsewhere(
        {"BANGER_HOME": str(n[0].home / "private")}, n[0].home / "private", n[0].name
    ),
}


@pytest.fixture(params=list(ELSEWHERE))
def elsewhere(
    request: pytest.FixtureRequest, roots_dir: Path, neighbour: tuple[User, Path]
) -> Elsewhere:
    build = ELSEWHERE[request.param]
    return build(roots_dir, neighbour)


def stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, f"bangerd {pid} gone")


def processes_of(uid: int) -> list[str]:
    """The command lines of ``uid``'s live processes (a daemon the CLI started would be one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == uid and "State:\tZ" not in (entry / "status").read_text():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def listing(directory: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.lstat().st_ino, p.lstat().st_mtime_ns) for p in directory.iterdir())


@pytest.mark.parametrize("argv", [["vm", "list"], ["vm", "create", "x"]])
def test_cli_refuses_another_users_runtime_dir_in_one_line(
    owner: User,
    elsewhere: Elsewhere,
    argv: list[str],
    reliability_counts: ReliabilityCounts,
) -> None:
    """No "internal error", no daemon or helper started into it, nothing written anywhere.

    ``vm create`` is the command that would start the root helper first.
    """
    before = listing(elsewhere.directory)
    result = as_user(owner, str(VENV_BIN / "banger"), *argv, timeout=20, **elsewhere.env)
    reliability_counts.hostile()
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: permission denied: {elsewhere.directory} belongs to {elsewhere.owner}",
        OWN_DIR_HINT,
    ]
    assert processes_of(owner.uid) == [], "the CLI left a process behind (an auto-start?)"
    assert listing(elsewhere.directory) == before
    # an auto-start would have made the owner's state directory and daemon log first
    assert list(owner.home.iterdir()) == []


def test_root_starts_no_helper_into_a_users_runtime_dir(
    neighbour: tuple[User, Path], reliability_counts: ReliabilityCounts
) -> None:
    """Root's CLI could start banger-helper anywhere: not into a user's runtime directory."""
    user, run = neighbour
    before = listing(run)
    with short_tmpdir() as home:
        env = {
            "HOME": str(home),
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "BANGER_HOME": str(home),
            "BANGER_RUNTIME_DIR": str(run),
            "BANGER_INSTALL_METADATA": str(home / "none.toml"),
            "BANGER_ALLOW_ROOT": "1",
        }
        result = subprocess.run(
            ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
             str(VENV_BIN / "banger"), "vm", "create", "x"],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    reliability_counts.hostile()
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: permission denied: {run} belongs to {user.name}",
        OWN_DIR_HINT,
    ]
    assert listing(run) == before
    # (other helpers may run on this host: only one for this directory would be ours)
    assert not [cmd for cmd in processes_of(0) if "helper" in cmd and str(run) in cmd]


def test_doctor_reports_another_users_runtime_dir_as_a_failed_check(
    owner: User, elsewhere: Elsewhere, reliability_counts: ReliabilityCounts
) -> None:
    """The same message and fix as the CLI's refusal; the socket probes do not run there."""
    before = listing(elsewhere.directory)
    result = as_user(owner, str(VENV_BIN / "banger"), "doctor", "--json", timeout=60,
                     **elsewhere.env)  # fmt: skip
    reliability_counts.hostile()
    assert result.returncode == 1, result.stderr  # a failed check
    assert result.stderr == ""
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    message = f"permission denied: {elsewhere.directory} belongs to {elsewhere.owner}"
    fix = OWN_DIR_HINT.removeprefix("hint: ")
    assert rows["runtime directory"] == {
        "name": "runtime directory", "status": "fail", "detail": message, "fix": fix,
    }  # fmt: skip
    for name in ("daemon", "helper", "vm dns"):
        assert rows[name] == {
            "name": name, "status": "fail", "detail": f"not probed: {message}", "fix": fix,
        }  # fmt: skip
    assert not [r for r in rows.values() if "the check itself failed" in r["detail"]], rows
    assert processes_of(owner.uid) == []
    assert listing(elsewhere.directory) == before


def test_doctor_passes_the_owners_own_runtime_dir(owner: User) -> None:
    """The control: the same check on a directory the owner may use."""
    result = as_user(owner, str(VENV_BIN / "banger"), "doctor", "--json", timeout=60,
                     BANGER_HOME=str(owner.home / "bh"))  # fmt: skip
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["runtime directory"]["status"] == "pass", rows["runtime directory"]
    assert rows["daemon"]["status"] == "warn", rows["daemon"]  # not running, not refused


def test_a_stopped_system_install_is_still_not_answering_not_denied(
    owner: User, roots_dir: Path
) -> None:
    """The control for "missing, under root's": /run/banger is gone while the installed
    services are stopped; that is the install's to explain, not someone else's directory."""
    tree = roots_dir / "install"
    tree.mkdir(mode=0o755)  # like /run: root's, open to read, closed to write
    roots_dir.chmod(0o755)
    try:
        meta = write_metadata(
            tree / "install.toml", owner_uid=owner.uid, runtime_dir=str(tree / "banger")
        )
        meta.chmod(0o644)
        result = as_user(owner, str(VENV_BIN / "banger"), "vm", "list",
                         BANGER_INSTALL_METADATA=str(meta))  # fmt: skip
    finally:
        roots_dir.chmod(0o700)
    assert result.returncode == 5, result.stderr
    assert result.stderr.splitlines()[0] == (
        "error: bangerd.service is installed but not answering: `systemctl status bangerd`"
    )
    assert processes_of(owner.uid) == []
