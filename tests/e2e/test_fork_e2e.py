"""``banger vm fork`` with a real QEMU/TCG guest (issue #18 item 3).

One boot. VM ``fa`` (fast init) gets a tmux session (``banger session start``),
a background ``sleep`` started over SSH and a file on its work disk. Bad
requests are refused up front, naming the field, creating nothing. Then
``vm fork fa -n 2``: two children ``fa-fork-1|2`` continue that guest — the
session listed and alive, the process alive, the file there — each with its
own address and hostname; a file written afterwards in one child is not seen
in the other nor in the source; each child's root is an empty overlay on one
shared frozen layer; the source runs on and answers; the fork's internal
snapshot is gone; a fork of a child works. Then a fork whose second
child dies mid-restore fails as a whole: the first child is removed, the
source runs on; and bangerd killed -9 mid-fork leaves whole VMs only, its
internal snapshot removed (and reported) by the next start's reconciliation.
Children are restored in parallel: both are held at once in the fault phases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from banger.daemon.stage_delay import MARKER
from banger.disk import layers
from banger.errors import InvalidArgument
from banger.guest.session_scripts import TMUX_SOCKET, tmux_session
from tests.e2e.harness import Banger, js
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.reliability.faults import (
    DAEMON_LOG,
    STAGE_DELAY_ENV,
    cli_background,
    kill9_daemon,
    log_offset,
    reconcile_report,
    restart_daemon,
    start_daemon,
)
from tests.support import assert_refusal, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: Seconds the daemon holds each child before re-identifying it (fault phase only).
HOLD = 20

SETUP = (
    "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/pid; "
    "echo on-the-work-disk > /root/note; sync"
)
PROBE = (
    'kill -0 "$(cat /dev/shm/pid)" && echo sleeper-alive; '
    f"tmux -S {TMUX_SOCKET} has-session -t {tmux_session('keep')} && echo tmux-alive; "
    "cat /root/note; cat /proc/sys/kernel/random/boot_id; hostname"
)


def guest(b: Banger, vm: str, script: str) -> list[str]:
    return b.banger("vm", "exec", vm, "--", "sh", "-c", script, timeout=300).stdout.split("\n")


def session_states(b: Banger, vm: str) -> dict[str, str]:
    return {s["name"]: s["state"] for s in js(b, "session", "list", vm)}


def test_fork_children_continue_the_source(b: Banger) -> None:
    b.banger("vm", "create", "fa", "--init", "fast", "--start")
    b.banger("session", "start", "fa", "--name", "keep", "--", "sh", "-c", "sleep 100000")
    guest(b, "fa", SETUP)
    before = guest(b, "fa", PROBE)
    assert before[:3] == ["sleeper-alive", "tmux-alive", "on-the-work-disk"], before
    boot_id = before[3]
    source = js(b, "vm", "show", "fa")

    # Refused up front, naming the field, exit 2, nothing created.
    b.banger("vm", "create", "fa-fork-2")  # not started; and it takes a child's name
    kept = [vm_kept(b, "fa"), vm_kept(b, "fa-fork-2")]
    for args, says in (
        (("fa", "-n", "0"), "count: must be 1-16, got 0"),
        (("fa", "-n", "17"), "count: must be 1-16, got 17"),
        (("nosuch",), "source: no VM named 'nosuch'"),
        (("fa-fork-2",), "source: VM fa-fork-2 is"),
        (("fa", "-n", "2"), "name: a VM named 'fa-fork-2' already exists"),
        (("fa", "--name", "Bad_Prefix"), "name: the child name 'Bad_Prefix-1' is not a DNS"),
    ):
        refused = b.banger("vm", "fork", *args, check=False)
        assert_refusal(refused, InvalidArgument.exit_code, says)
    assert_nothing_left(b, kept)
    b.banger("vm", "rm", "fa-fork-2")

    forked = js(b, "vm", "fork", "fa", "-n", "2")
    assert forked["disk_copies"] in ("reflink", "sparse copy"), forked
    children = {c["name"]: c for c in forked["children"]}
    assert list(children) == ["fa-fork-1", "fa-fork-2"], forked
    assert all(c["state"] == "running" for c in children.values()), forked
    addresses = {source["ip"]} | {c["ip"] for c in children.values()}
    assert len(addresses) == 3, addresses
    roots_are_overlays_on_one_layer(b, [c["id"] for c in children.values()])

    for name in children:
        after = guest(b, name, PROBE)
        assert after[:3] == ["sleeper-alive", "tmux-alive", "on-the-work-disk"], (name, after)
        assert after[3] == boot_id  # continued, not booted
        assert after[4] == name  # its own hostname
        assert session_states(b, name) == {"keep": "running"}

    # Each child's disks are its own.
    guest(b, "fa-fork-1", "echo only-here > /root/mine; echo only-here > /mine; sync")
    for name in ("fa-fork-2", "fa"):
        seen = guest(b, name, "cat /root/mine /mine 2>/dev/null; echo end")
        assert seen[0] == "end", (name, seen)

    # The source ran on: it answers, same boot, its session and process still there.
    assert js(b, "vm", "show", "fa")["state"] == "running"
    again = guest(b, "fa", PROBE)
    assert again[:5] == ["sleeper-alive", "tmux-alive", "on-the-work-disk", boot_id, "fa"]
    assert session_states(b, "fa") == {"keep": "running"}

    # The internal snapshot is gone; children do not need it.
    assert js(b, "vm", "snapshots") == []

    # A fork of a fork: the grandchild continues the child, with what it wrote.
    grand = js(b, "vm", "fork", "fa-fork-1", "--name", "gg")["children"]
    assert [(c["name"], c["state"]) for c in grand] == [("gg-1", "running")], grand
    seen = guest(b, "gg-1", PROBE + "; cat /root/mine")
    assert seen[:3] == ["sleeper-alive", "tmux-alive", "on-the-work-disk"], seen
    assert seen[3:] == [boot_id, "gg-1", "only-here", ""], seen
    b.banger("vm", "rm", "gg-1", "fa-fork-1", "fa-fork-2")
    assert_nothing_left(b, [vm_kept(b, "fa")])

    a_failed_child_undoes_the_fork(b, boot_id)
    a_killed_daemon_mid_fork_leaves_whole_vms_only(b)
    b.banger("vm", "rm", "fa")
    assert_nothing_left(b)


def roots_are_overlays_on_one_layer(b: Banger, vm_ids: list[str]) -> None:
    """Each child's root is a small qcow2 overlay whose backing file is a frozen layer
    linked in its own directory; the children share that layer (one inode, one link
    each, the internal snapshot's gone), so none holds a copy of the source's root."""
    inodes = set()
    for vm_id in vm_ids:
        root = b.state_dir / "vms" / vm_id / "root.qcow2"
        out = subprocess.run(
            ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(root)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        chain = json.loads(out)
        layer = Path(chain[1]["filename"])
        assert chain[0]["backing-filename"] == layer.name, chain
        assert layer.parent == root.parent and layers.is_layer(layer.name), chain
        assert chain[-1]["format"] == "raw" and "/images/" in chain[-1]["filename"], chain
        assert layer.stat().st_mode & 0o777 == layers.FROZEN_MODE
        # the overlay holds only what the child wrote since the fork: far below the layer
        assert root.stat().st_blocks * 512 < 8 << 20, (root, root.stat())
        inodes.add((layer.stat().st_ino, layer.stat().st_nlink))
    assert inodes == {(next(iter(inodes))[0], len(vm_ids))}, inodes


def a_failed_child_undoes_the_fork(b: Banger, boot_id: str) -> None:
    """Child 2 of 2 dies mid-restore (its QEMU killed while the daemon holds both, in
    parallel, before re-identification): the fork fails with one error, child 1 —
    finished or cancelled mid-restore — is removed with it, the internal snapshot too,
    and the source runs on."""
    restart_daemon(b, **{STAGE_DELAY_ENV: f"reidentify:{HOLD}"})
    offset = log_offset(b)
    fork = cli_background(b, "vm", "fork", "fa", "-n", "2", "--name", "fx")

    wait_until(lambda: holds(b, offset) >= 2, 900, "the second child to be held")
    pid = js(b, "vm", "show", "fx-2")["pid"]
    os.kill(int(pid), signal.SIGKILL)
    out, err = fork.communicate(timeout=900)
    assert fork.returncode not in (0, None), (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vm.fork fa failed" in errors[0], err
    assert [v["name"] for v in js(b, "vm", "list")] == ["fa"]
    assert js(b, "vm", "snapshots") == []
    assert js(b, "vm", "show", "fa")["state"] == "running"
    again = guest(b, "fa", PROBE)
    assert again[:5] == ["sleeper-alive", "tmux-alive", "on-the-work-disk", boot_id, "fa"]
    assert_nothing_left(b, [vm_kept(b, "fa")])


def a_killed_daemon_mid_fork_leaves_whole_vms_only(b: Banger) -> None:
    """bangerd killed -9 while both children are being made (in parallel, both held
    before re-identification): at restart both half children are rolled back, the
    source runs; the internal snapshot left behind is removed by that restart's
    reconciliation, which reports it."""
    offset = log_offset(b)  # the daemon still holds children before re-identifying them
    fork = cli_background(b, "vm", "fork", "fa", "-n", "2", "--name", "fk")
    wait_until(lambda: holds(b, offset) >= 2, 900, "the second child to be held")
    kill9_daemon(b)
    fork.communicate(timeout=300)
    assert fork.returncode != 0
    start_daemon(b)
    vms = {v["name"]: v["state"] for v in js(b, "vm", "list")}
    assert vms == {"fa": "running"}, vms
    assert js(b, "vm", "snapshots") == []
    swept = [line for line in reconcile_report(b)["repaired"] if line.startswith("snapshot fork.")]
    assert len(swept) == 1 and "internal snapshot of an interrupted vm fork" in swept[0], swept
    restart_daemon(b)  # no more holds
    js(b, "vm", "fork", "fa", "--name", "fy")
    assert js(b, "vm", "snapshots") == []  # the fork removed its own
    b.banger("vm", "rm", "fy-1")
    assert_nothing_left(b, [vm_kept(b, "fa")])


def holds(b: Banger, offset: int) -> int:
    """How many times, since ``offset``, the daemon held a child before re-identifying it."""
    text = (b.state_dir / DAEMON_LOG).read_bytes()[offset:].decode(errors="replace")
    return sum(MARKER in line and "reidentify" in line for line in text.splitlines())
