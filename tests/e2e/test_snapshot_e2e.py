"""``banger vm snapshot`` and ``vm create --from-snapshot`` with a real QEMU/TCG guest.

One boot. VM ``sa`` gets state that lives only in memory (a file in the
``/dev/shm`` tmpfs and a background ``sleep`` started over SSH) and a file on
its work disk (``/root``). After ``vm snapshot sa`` (taken with the guest's
filesystems frozen), ``vm create sb|sc --from-snapshot`` — while ``sa`` still
runs — continue that guest, no reboot: the same ``boot_id``, an uptime that
kept counting, the tmpfs file and the process still there, the ``/root`` file;
each re-identified through the guest agent with its own address, MAC, hostname
and machine-id, reached over SSH with the pinned (shared) host key
(StrictHostKeyChecking=yes). A file written in one is not seen in the others.
A snapshot whose guest agent does not answer cannot be restored: one error,
nothing left behind. A snapshot of a restored VM carries its frozen layer; removing
the snapshot a running VM's root is layered on leaves that VM reading its root.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from banger.daemon.vms import reident
from banger.disk import layers
from banger.errors import Conflict, InvalidArgument, NotFound
from tests.e2e.harness import Banger, js
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.support import assert_refusal, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

SETUP = (
    "echo kept-in-memory > /dev/shm/marker; "
    "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/pid; "
    "echo on-the-work-disk > /root/note; sync"
)
PROBE = (
    "cat /dev/shm/marker; "
    'kill -0 "$(cat /dev/shm/pid)" && echo sleeper-alive; '
    "cat /root/note; cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime; hostname"
)


def guest(b: Banger, vm: str, script: str) -> list[str]:
    return b.banger("vm", "ssh", vm, "--", "sh", "-c", script).stdout.split("\n")


def test_snapshot_then_restore_continues_the_guest(b: Banger) -> None:
    b.banger("vm", "create", "sa", "--init", "fast", "--start")
    shown = js(b, "vm", "show", "sa")
    ip, mac = shown["ip"], shown["mac"]
    guest(b, "sa", SETUP)
    before = guest(b, "sa", PROBE)
    assert before[:3] == ["kept-in-memory", "sleeper-alive", "on-the-work-disk"], before
    boot_id, uptime = before[3], float(before[4])

    # Only a running (or paused) VM has memory to save.
    b.banger("vm", "create", "idle")
    refused = b.banger("vm", "snapshot", "idle", check=False)
    assert_refusal(refused, Conflict.exit_code, "only a running or paused VM")
    bad = b.banger("vm", "snapshot", "sa", "--name", "Not_A_Label", check=False)
    assert_refusal(
        bad, InvalidArgument.exit_code, "snapshot name: 'Not_A_Label' is not a DNS label"
    )

    # `vm set` applies at the next start; the snapshot records what runs (issue #21 item 8)
    running_memory = shown["memory_mib"]
    b.banger("vm", "set", "sa", "--memory", "256")
    assert js(b, "vm", "show", "sa")["memory_mib"] == 256
    snap = js(b, "vm", "snapshot", "sa", "--name", "s1")
    assert snap["memory_mib"] == running_memory, snap
    assert (snap["name"], snap["vm"], snap["vmm"], snap["ip"], snap["mac"]) == (
        "s1", "sa", "qemu", ip, mac,
    )  # fmt: skip
    assert snap["size"] > 1 << 20
    assert snap["frozen"] is True  # the disks were copied with the filesystems frozen
    # The source resumed: it still answers, same boot.
    assert js(b, "vm", "show", "sa")["state"] == "running"
    assert guest(b, "sa", PROBE)[3] == boot_id
    again = b.banger("vm", "snapshot", "sa", "--name", "s1", check=False)
    assert_refusal(again, Conflict.exit_code, "a snapshot named 's1' already exists")

    # A bad flag creates nothing.
    fixed = b.banger("vm", "create", "sb", "--from-snapshot", "s1", "--cpus", "2", check=False)
    assert_refusal(fixed, InvalidArgument.exit_code, "--cpus: not with --from-snapshot")
    assert_nothing_left(b, [vm_kept(b, "idle"), vm_kept(b, "sa")])
    b.banger("vm", "rm", "idle")

    # A state QEMU cannot load (here: a record that lies about the memory size) fails
    # saying QEMU's own reason, not "QMP connection failed" (issue #21 item 8).
    db = sqlite3.connect(b.state_dir / "banger.db")
    try:
        with db:
            db.execute("UPDATE snapshots SET memory_mib = 256 WHERE name = 's1'")
        broken = b.banger("vm", "create", "sb", "--from-snapshot", "s1", check=False)
        with db:
            db.execute("UPDATE snapshots SET memory_mib = ? WHERE name = 's1'", (running_memory,))
    finally:
        db.close()
    assert broken.returncode != 0
    error = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "QEMU could not load the saved state:" in error[0], broken.stderr
    assert "QMP connection failed" not in error[0], broken.stderr
    assert_nothing_left(b, [vm_kept(b, "sa")])

    # Two VMs from one snapshot while its source runs (issue #18 item 2): each is
    # re-identified through the guest agent — its own address, MAC, hostname and
    # machine-id — and continues the saved guest: same boot, the memory-only file, the
    # process started before the snapshot, the work-disk file.
    source_id = guest(b, "sa", "cat /etc/machine-id")[0]
    clones = {}
    for name in ("sb", "sc"):
        restored = js(b, "vm", "create", name, "--from-snapshot", "s1")
        assert restored["state"] == "running", restored
        assert restored["vmm_reason"] == "restored from snapshot s1 (taken on qemu)"
        clones[name] = restored
    addresses = {ip} | {c["ip"] for c in clones.values()}
    macs = {mac} | {c["mac"] for c in clones.values()}
    assert len(addresses) == 3 and len(macs) == 3, clones
    machine_ids = {source_id}
    for name, restored in clones.items():
        after = guest(b, name, PROBE + "; cat /etc/machine-id; ip -o -4 addr show dev eth0")
        assert after[:3] == ["kept-in-memory", "sleeper-alive", "on-the-work-disk"], after
        assert after[3] == boot_id  # no reboot
        assert float(after[4]) >= uptime  # its clock kept counting from where it was
        assert after[5] == name  # re-identified: its own hostname
        machine_ids.add(after[6])
        assert f" {restored['ip']}/" in after[7], after  # the guest has the VM's address
        link = guest(b, name, "cat /sys/class/net/eth0/address")[0]
        assert link == restored["mac"]
    assert len(machine_ids) == 3, machine_ids
    assert js(b, "vm", "show", "sa")["state"] == "running"  # the source is untouched
    assert guest(b, "sa", "hostname")[0] == "sa"

    # Disks are each VM's own: a file written in one is not seen in the others.
    guest(b, "sb", "echo only-in-sb > /root/mine; echo only-in-sb > /mine; sync")
    for name in ("sa", "sc"):
        seen = guest(b, name, "cat /root/mine /mine 2>/dev/null; echo end")
        assert seen[0] == "end", (name, seen)

    # The shared sshd host key: every VM from one snapshot presents the snapshot's key,
    # pinned under each VM's own name and address.
    # pinned under each VM's own name and address (vm ssh above checks it strictly).
    pins = {}
    for line in (b.state_dir / "ssh" / "known_hosts").read_text().splitlines():
        names, _, key = line.partition(" ")
        for pinned in names.split(","):
            pins[pinned] = key
    for name, restored in clones.items():
        assert pins[name] == pins[restored["ip"]] == pins["sa"] == pins[ip], pins

    # A guest whose agent does not answer cannot take a new identity: one clear error,
    # nothing left behind (here the source's agent is stopped before the snapshot).
    guest(b, "sa", "pkill -x qemu-ga; true")
    noagent = js(b, "vm", "snapshot", "sa", "--name", "s-noagent")
    assert noagent["frozen"] is False, noagent
    kept = [vm_kept(b, n) for n in ("sa", "sb", "sc")]
    failed = b.banger("vm", "create", "sd", "--from-snapshot", "s-noagent", check=False)
    assert failed.returncode == reident.AgentRequired.exit_code, failed.stderr
    error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "needs qemu-guest-agent running" in error[0], failed.stderr
    assert_nothing_left(b, kept)
    b.banger("vm", "snapshot-rm", "s-noagent")
    b.banger("vm", "rm", "sa", "sc")
    assert [s["name"] for s in js(b, "vm", "snapshots", "sa")] == ["s1"]  # sa is gone

    # --stop leaves the VM paused after the snapshot; resume continues it.
    snap2 = js(b, "vm", "snapshot", "sb", "--stop")
    assert snap2["name"].startswith("sb-") and snap2["vm"] == "sb"
    assert js(b, "vm", "show", "sb")["state"] == "paused"
    # sb's root is an overlay on s1's frozen layer: its snapshot carries that layer
    # (linked, the same inode) below a new one, the copy of sb's overlay.
    sb_dir = b.state_dir / "vms" / js(b, "vm", "show", "sb")["id"]
    carried = layers.layers_in(Path(snap2["dir"]))
    assert len(carried) == 2 and layers.layers_in(sb_dir) == [
        n for n in carried if (sb_dir / n).exists()
    ], (carried, layers.layers_in(sb_dir))
    b.banger("vm", "resume", "sb")
    assert guest(b, "sb", PROBE)[3] == boot_id

    listed = js(b, "vm", "snapshots")
    assert [s["name"] for s in listed] == ["s1", snap2["name"]]
    assert [s["name"] for s in js(b, "vm", "snapshots", "sb")] == [snap2["name"]]
    removed = js(b, "vm", "snapshot-rm", "s1", snap2["name"])
    assert [s["name"] for s in removed] == ["s1", snap2["name"]]
    assert js(b, "vm", "snapshots") == []
    gone = b.banger("vm", "snapshot-rm", "s1", check=False)
    assert_refusal(gone, NotFound.exit_code, "no snapshot named 's1'")
    # sb does not need the snapshot's files to keep running: its root reads from its
    # own link of s1's layer (page cache dropped, so the reads reach the disk).
    assert guest(b, "sb", "cat /dev/shm/marker")[0] == "kept-in-memory"
    read = "sync; echo 3 > /proc/sys/vm/drop_caches; md5sum /bin/ls /bin/sh >/dev/null && echo read"
    assert guest(b, "sb", read)[0] == "read"
    b.banger("vm", "rm", "sb")
    snapshots_dir = b.state_dir / "snapshots"
    assert not snapshots_dir.exists() or list(snapshots_dir.iterdir()) == []
