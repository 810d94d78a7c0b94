"""A local user who is not the owner gets nothing from banger's sockets or files.

Two locks stand in the way, and each is tested on its own:

- the file modes: both sockets 0600, owner's, inside the owner's 0700 runtime
  dir (created under a 0177 umask, so never briefly open): connecting is
  EACCES for anyone else, even when the directories above are opened up;
- behind them ``SO_PEERCRED`` on both sockets: even a socket whose mode lets a
  stranger connect (a misconfigured group or mode) serves them nothing — the
  helper a refusal line and no descriptor, bangerd one 403 before it parses
  the request, and it must arrive: 50 times in a row, never a broken pipe —
  and nothing changes on the host. (tests/integration/
  test_helper_netns.py checks the helper's refusal for ``ping`` with a shared
  group; here it is the privileged ops that matter.)

Plus the daemon's state (database, logs, keys) is unreadable to the stranger.
The installation is the e2e harness's: namespace, owner user, root helper,
daemon auto-started by the real CLI as the owner.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Banger, banger_env
from tests.reliability.stranger import Target, helper_request, http_get, probe_as
from tests.reliability_counts import ReliabilityCounts
from tests.support import User, needs_root, throwaway_user

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

EVIL_BRIDGE = "bgevil0"
EVIL_TAP = "bt-evil0000000"


@pytest.fixture(scope="module")
def installation() -> Iterator[Banger]:
    with banger_env(seed=False) as b:
        b.banger("vm", "list")  # auto-starts bangerd as the owner
        yield b


@pytest.fixture(scope="module")
def stranger() -> Iterator[User]:
    with throwaway_user("bgx") as user:
        yield user


def daemon_sock(b: Banger) -> Path:
    return b.runtime_dir / "bangerd.sock"


def helper_sock(b: Banger) -> Path:
    return b.runtime_dir / "helper.sock"


def privileged_requests(b: Banger) -> list[Target]:
    """What a stranger would ask the helper for: a bridge, a tap fd, NAT, a teardown."""
    return [
        Target("bridge", helper_sock(b), helper_request("ensure_bridge", name=EVIL_BRIDGE,
                                                        cidr="172.31.250.1/24")),
        Target("tap", helper_sock(b), helper_request("open_tap", name=EVIL_TAP,
                                                     bridge=EVIL_BRIDGE)),
        Target("nat", helper_sock(b), helper_request("ensure_nat", cidr="172.31.250.0/24",
                                                     bridge=EVIL_BRIDGE)),
        Target("ping", helper_sock(b), helper_request("ping")),
    ]  # fmt: skip


def state_files(b: Banger) -> list[Target]:
    files = sorted(p for p in b.state_dir.rglob("*") if p.is_file() and not p.is_symlink())
    assert files, "the daemon wrote no state"
    return [Target(f"file:{p.relative_to(b.home)}", p) for p in files]


def owner_targets(b: Banger) -> list[Target]:
    return [
        Target("daemon", daemon_sock(b), http_get("/v1/version")),
        Target("helper", helper_sock(b), helper_request("ping")),
    ]


def assert_owner_is_served(b: Banger) -> None:
    """The positive control: the same probe as the owner gets real answers."""
    got = probe_as(b.user, owner_targets(b), prefix=b.ns.argv())
    assert got["daemon"]["reply"].startswith("HTTP/1.1 200"), got
    assert f'"uid":{b.user.uid}' in got["daemon"]["reply"]
    assert json.loads(got["helper"]["reply"])["ok"] is True, got


def assert_nothing_changed(b: Banger) -> None:
    links = b.host("ip", "-o", "link", "show").stdout
    assert EVIL_BRIDGE not in links and EVIL_TAP not in links, links
    assert "banger" not in b.host("nft", "list", "tables").stdout


def test_sockets_and_state_are_owner_only(installation: Banger) -> None:
    b = installation
    for sock in (daemon_sock(b), helper_sock(b)):
        st = sock.lstat()
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == b.user.uid, sock
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{sock} is {stat.S_IMODE(st.st_mode):o}"
    for directory in (b.home, b.runtime_dir, b.state_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_stranger_gets_eacces_everywhere(
    installation: Banger, stranger: User, reliability_counts: ReliabilityCounts
) -> None:
    b = installation
    targets = [
        Target("daemon", daemon_sock(b), http_get("/v1/vms")),
        *privileged_requests(b),
        *state_files(b),
    ]
    got = probe_as(stranger, targets, prefix=b.ns.argv())
    reliability_counts.hostile(len(targets))
    assert {key: r.get("errno") for key, r in got.items()} == {
        t.key: errno.EACCES for t in targets
    }, got
    assert_nothing_changed(b)
    assert_owner_is_served(b)


def test_opened_directories_still_leave_the_socket_files_closed(
    installation: Banger, stranger: User, reliability_counts: ReliabilityCounts
) -> None:
    """An owner who makes their home and runtime dir traversable loses nothing."""
    b = installation
    modes = {d: stat.S_IMODE(d.stat().st_mode) for d in (b.home, b.runtime_dir)}
    try:
        for d in modes:
            d.chmod(0o711)
        targets = [Target("daemon", daemon_sock(b), http_get("/v1/vms")), *privileged_requests(b)]
        got = probe_as(stranger, targets, prefix=b.ns.argv())
        reliability_counts.hostile(len(targets))
        assert {key: r.get("errno") for key, r in got.items()} == {
            t.key: errno.EACCES for t in targets
        }, got
        # The state directory keeps its own 0700: the files below stay out of reach.
        files = state_files(b)
        assert all(r.get("errno") == errno.EACCES for r in probe_as(stranger, files).values())
    finally:
        for d, mode in modes.items():
            d.chmod(mode)
    assert_nothing_changed(b)


def probe_through_an_open_socket(
    b: Banger, sock: Path, stranger: User, targets: list[Target]
) -> dict[str, Any]:
    """Probe as ``stranger`` while ``sock`` is 0666 and the dirs above it traversable."""
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (b.home, b.runtime_dir, sock)}
    try:
        for d in (b.home, b.runtime_dir):
            d.chmod(0o711)
        sock.chmod(0o666)
        return probe_as(stranger, targets, prefix=b.ns.argv())
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_helper_refuses_a_stranger_even_through_an_open_socket(
    installation: Banger, stranger: User, reliability_counts: ReliabilityCounts
) -> None:
    """File modes gone wrong (0666, traversable dirs): SO_PEERCRED still refuses."""
    b = installation
    targets = privileged_requests(b)
    got = probe_through_an_open_socket(b, helper_sock(b), stranger, targets)
    reliability_counts.hostile(len(targets))
    for target in targets:
        result = got[target.key]
        assert result.get("connected"), result  # the file mode let them in ...
        assert result["fds"] == 0, result  # ... no tap descriptor came back ...
        reply = json.loads(result["reply"].splitlines()[0])
        assert reply["ok"] is False, reply  # ... only the refusal, then the close
        assert reply["error"] == f"permission denied: uid {stranger.uid} is not this helper's owner"
        assert len(result["reply"].splitlines()) == 1, result
    assert_nothing_changed(b)
    log = (b.state_dir / "helper.log").read_text()
    assert f"uid={stranger.uid}" in log and "refused connection" in log
    assert_owner_is_served(b)


def test_daemon_refuses_a_stranger_even_through_an_open_socket(
    installation: Banger, stranger: User, reliability_counts: ReliabilityCounts
) -> None:
    """The same misconfiguration on bangerd's socket: SO_PEERCRED answers 403 and closes."""
    b = installation
    sock = daemon_sock(b)
    targets = [
        Target("list", sock, http_get("/v1/vms")),
        Target("version", sock, http_get("/v1/version")),
        Target("create", sock, "POST /v1/vms HTTP/1.1\r\nHost: bangerd\r\n"
               "content-type: application/json\r\ncontent-length: 15\r\n\r\n"
               '{"name":"evil"}'),
    ]  # fmt: skip
    got = probe_through_an_open_socket(b, sock, stranger, targets)
    reliability_counts.hostile(len(targets))
    for target in targets:
        result = got[target.key]
        assert result.get("connected"), result  # the file mode let them in ...
        head, _, body = result["reply"].partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 403 Forbidden"), result  # ... only the refusal
        assert json.loads(body)["error"] == (
            f"permission denied: uid {stranger.uid} is not this daemon's owner"
        )
    assert "evil" not in b.banger("vm", "list", "--json").stdout
    log = (b.state_dir / "bangerd.log").read_text()
    assert f"uid={stranger.uid}: not the owner" in log
    assert_owner_is_served(b)


#: Connections in a row for the refusal loop below (closing at once lost up to a quarter).
REFUSAL_ROUNDS = 50


def test_the_daemon_refusal_arrives_every_time(
    installation: Banger, stranger: User, reliability_counts: ReliabilityCounts
) -> None:
    """50 strangers in a row, each sending at once: every one reads the 403.

    A refusal that closes before the stranger's request is sent turns into a
    broken pipe on its side (or a reset): the 403 is lost. One daemon, one
    probe process, 50 connections, so the loop stays cheap on a loaded host.
    """
    b = installation
    sock = daemon_sock(b)
    shapes = [
        http_get("/v1/vms"),
        "GET /v1/version HTTP/1.1\r\nHost: bangerd\r\n\r\n",  # keep-alive: EOF comes from us
        "POST /v1/vms HTTP/1.1\r\nHost: bangerd\r\ncontent-type: application/json\r\n"
        'content-length: 15\r\n\r\n{"name":"evil"}',
    ]
    targets = [
        Target(f"probe-{i:02d}", sock, shapes[i % len(shapes)]) for i in range(REFUSAL_ROUNDS)
    ]
    got = probe_through_an_open_socket(b, sock, stranger, targets)
    reliability_counts.hostile(len(targets))
    lost = {
        key: {"errno": r.get("errno"), "reply": r.get("reply", "")[:40]}
        for key, r in got.items()
        if not (r.get("connected") and r["reply"].startswith("HTTP/1.1 403 Forbidden"))
    }
    assert not lost, f"{len(lost)} of {REFUSAL_ROUNDS} refusals did not arrive: {lost}"
    # The owner's CLI is still served (and nothing was created) after the 50.
    assert "evil" not in b.banger("vm", "list", "--json").stdout


def test_owner_files_are_not_world_readable(installation: Banger) -> None:
    """Belt and braces under the 0700 directories: no state file is readable by others."""
    b = installation
    loose = [
        f"{p} {stat.S_IMODE(p.stat().st_mode):o}"
        for p in b.state_dir.rglob("*")
        if p.is_file() and not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o007
    ]
    assert not loose, loose
    assert os.stat(b.state_dir / "banger.db").st_uid == b.user.uid
