"""The guest agent channel with a real guest (issue #18 item 1).

A built image runs ``qemu-guest-agent``; the daemon reaches it over the VM's
virtio-serial port without the network. ``vm show`` says the channel is
available, and after ``vm resume`` and ``vm create --from-snapshot`` the
guest's clock is the host's again: it stood still while the guest was paused or
saved (before the agent, such a guest was behind by that long). A snapshot
freezes the guest's filesystems around its disk copies (thawed after; a restore
thaws the saved, frozen state) and ``vm stop`` powers the guest off through
the agent, under both inits.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.harness import Banger
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: Long enough that a clock left behind is unmistakable, well past SSH's latency.
PAUSE_SECONDS = 12.0
#: How far the guest's clock may be from the host's (the SSH round trip is outside it).
SLACK = 2.0


def guest_clock_offset(b: Banger, name: str) -> float:
    """The guest's clock minus the host's, bounded by the time the ssh took."""
    before = time.time()
    out = b.banger("vm", "ssh", name, "--", "date", "+%s.%N").stdout.strip()
    after = time.time()
    guest = float(out)
    if guest < before:
        return guest - before
    if guest > after:
        return guest - after
    return 0.0


#: The fast init's way of starting the agent (after a test stopped it).
RESTART_AGENT = (
    "setsid /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 "
    "-t /run/qemu-ga </dev/null >/dev/null 2>&1 &"
)


def op_messages(b: Banger, kind: str, target: str) -> str:
    """Every event message of the latest ``kind`` operation on ``target`` (info included)."""
    ops = json.loads(b.banger("ops", "list", "--all", "--json").stdout)
    op = max(
        (o for o in ops if o["kind"] == kind and o["target"] == target),
        key=lambda o: o["created_at"],
    )
    out = b.banger("ops", "show", op["id"], "--follow", "--json").stdout
    return "\n".join(json.loads(line)["message"] for line in out.splitlines())


def guest_writes(b: Banger, name: str) -> bool:
    """A file written and synced on / and /root (blocks on a frozen filesystem)."""
    script = "echo ok > /root/probe && echo ok > /probe && sync && cat /root/probe /probe"
    out = b.banger("vm", "ssh", name, "--", "sh", "-c", script, timeout=120).stdout
    return out.split() == ["ok", "ok"]


def test_agent_is_available_and_resume_and_restore_set_the_clock(b: Banger) -> None:
    b.banger("vm", "create", "--name", "ga", "--init", "fast", "--start")
    shown = json.loads(b.banger("vm", "show", "ga", "--json").stdout)
    assert shown["agent"] == "available"
    assert abs(guest_clock_offset(b, "ga")) <= SLACK

    b.banger("vm", "pause", "ga")
    time.sleep(PAUSE_SECONDS)  # the cause under test: wall time passing while paused
    resumed = b.banger("vm", "resume", "ga")
    offset = guest_clock_offset(b, "ga")
    assert abs(offset) <= SLACK, (
        f"the resumed guest's clock is {offset:+.1f}s off the host's; resume said:\n"
        + resumed.stdout
        + resumed.stderr
    )

    # A snapshot freezes the guest's filesystems around the disk copies, and thaws them.
    snap = json.loads(b.banger("vm", "snapshot", "ga", "--name", "gs", "--json").stdout)
    assert snap["frozen"] is True, snap
    assert guest_writes(b, "ga")  # thawed: a frozen /root would block the write

    # Without an answering agent the snapshot is taken as before, unfrozen, and says so.
    b.banger("vm", "ssh", "ga", "--", "sh", "-c", "pkill -x qemu-ga")
    unfrozen = json.loads(b.banger("vm", "snapshot", "ga", "--name", "gn", "--json").stdout)
    assert unfrozen["frozen"] is False, unfrozen
    b.banger("vm", "snapshot-rm", "gn")
    b.banger("vm", "ssh", "ga", "--", "sh", "-c", RESTART_AGENT)

    # vm stop asks through the agent (the fast init's own poweroff) and the guest powers off.
    b.banger("vm", "stop", "ga")
    said = op_messages(b, "vm.stop", "ga")
    assert "via its agent (guest-exec /sbin/banger-fast-init poweroff)" in said, said
    assert "the guest powered off" in said, said
    b.banger("vm", "rm", "ga")
    time.sleep(PAUSE_SECONDS)  # the cause under test: the snapshot ageing
    # A restore: the saved guest's clock stopped when the snapshot was taken, and its
    # filesystems were frozen (the restore thaws them before SSH is tried).
    restored = b.banger("vm", "create", "gb", "--from-snapshot", "gs")
    assert "guest filesystems thawed" in op_messages(b, "vm.create", "gb")
    assert json.loads(b.banger("vm", "show", "gb", "--json").stdout)["agent"] == "available"
    assert guest_writes(b, "gb")
    offset = guest_clock_offset(b, "gb")
    assert abs(offset) <= SLACK, (
        f"the restored guest's clock is {offset:+.1f}s off the host's; restore said:\n"
        + restored.stdout
        + restored.stderr
    )
    b.banger("vm", "rm", "--force", "gb")
    b.banger("vm", "snapshot-rm", "gs")


def test_a_systemd_guest_runs_the_agent_too(b: Banger) -> None:
    """systemd starts qemu-guest-agent from the port link banger-virtio-ports makes (no udev
    in banger's images: their qemu-guest-agent.service replaces the package's); the fast
    init starts it by hand. "available" means it answered before SSH did."""
    b.banger("vm", "create", "--name", "gsd", "--init", "systemd", "--start")
    assert json.loads(b.banger("vm", "show", "gsd", "--json").stdout)["agent"] == "available"
    # vm stop: guest-shutdown through the agent; systemd powers the guest off.
    b.banger("vm", "stop", "gsd")
    said = op_messages(b, "vm.stop", "gsd")
    assert "via its agent (guest-shutdown)" in said, said
    assert "the guest powered off" in said, said
    b.banger("vm", "rm", "gsd")
