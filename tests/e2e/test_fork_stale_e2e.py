"""A fork child does not keep the source's held-connection processes (issue #18 item 5).

The source's memory holds bangerd's SSH connection to it: sshd's processes for
that connection and banger's command runner on it (``python3 -I -S -c …
banger-runner``). A child restored from that memory gets copies whose TCP peer
is gone (the child has its own address); re-identification ends them
(:mod:`banger.daemon.vms.reident`). One boot of ``sa`` (fast init): a sleeper
and an unmarked python3 started with setsid, an exec so the runner runs; then
``vm fork sa``: in the child exactly one runner (its own, which runs the check)
and every sshd process serving a connection serves one to the child's own
address; the sleeper and the plain python3 are alive; the source still has its
one runner and its connection, and answers. The daemon's log says what the child's
re-identification ended (sshd's processes, and the runner, which ended by itself
once its channel closed).
"""

from __future__ import annotations

import pytest

from tests.e2e.census import census
from tests.e2e.harness import Banger, js
from tests.e2e.leftovers import assert_nothing_left
from tests.reliability.faults import DAEMON_LOG, log_offset
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

SETUP = (
    "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/sleeper; "
    "setsid python3 -c 'import time; time.sleep(100000)' </dev/null >/dev/null 2>&1 & "
    "echo $! > /dev/shm/plain"
)
ALIVE = (
    'kill -0 "$(cat /dev/shm/sleeper)" && echo sleeper-alive; '
    'kill -0 "$(cat /dev/shm/plain)" && echo plain-python3-alive'
)


def guest(b: Banger, vm: str, *argv: str) -> list[str]:
    return b.banger("vm", "exec", vm, "--", *argv, timeout=300).stdout.split()


def test_a_fork_child_keeps_no_stale_connection_processes(b: Banger) -> None:
    b.banger("vm", "create", "sa", "--init", "fast", "--start")
    b.banger("vm", "exec", "sa", "--", "sh", "-c", SETUP, timeout=300)
    assert guest(b, "sa", "sh", "-c", ALIVE) == ["sleeper-alive", "plain-python3-alive"]
    source_ip = js(b, "vm", "show", "sa")["ip"]
    assert census(b, "sa") == (1, [source_ip])

    offset = log_offset(b)
    (child,) = js(b, "vm", "fork", "sa")["children"]
    assert child["state"] == "running", child
    # The child had copies to end (this is what the census below would otherwise find):
    # sshd's processes for the held connection, and the runner, which ended by itself.
    log = (b.state_dir / DAEMON_LOG).read_bytes()[offset:].decode(errors="replace")
    ended = [line for line in log.splitlines() if "ended the source's stale SSH" in line]
    assert len(ended) == 1, log[-3000:]
    assert "sshd none" not in ended[0] and "runner none" not in ended[0], ended
    assert "killed" not in ended[0], ended
    assert child["ip"] != source_ip
    # Its own runner only (the one running the census), sshd only for its own address.
    assert census(b, child["name"]) == (1, [child["ip"]])
    # Nothing else was touched: a python3 that is not the runner lives on.
    assert guest(b, child["name"], "sh", "-c", ALIVE) == ["sleeper-alive", "plain-python3-alive"]
    # The source kept its runner and its connection.
    assert census(b, "sa") == (1, [source_ip])
    assert guest(b, "sa", "sh", "-c", ALIVE) == ["sleeper-alive", "plain-python3-alive"]

    b.banger("vm", "rm", child["name"], "sa")
    assert_nothing_left(b)
