"""The guest agent channel with a real guest (issue #18 item 1).

A built image runs ``qemu-guest-agent``; the daemon reaches it over the VM's
virtio-serial port without the network. ``vm show`` says the channel is
available, and after ``vm resume`` and ``vm create --from-snapshot`` the
guest's clock is the host's again: it stood still while the guest was paused or
saved (before the agent, such a guest was behind by that long).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Banger, banger_env
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: Long enough that a clock left behind is unmistakable, well past SSH's latency.
PAUSE_SECONDS = 12.0
#: How far the guest's clock may be from the host's (the SSH round trip is outside it).
SLACK = 2.0


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        yield env


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

    # A restore: the saved guest's clock stopped when the snapshot was taken.
    b.banger("vm", "snapshot", "ga", "--name", "gs")
    b.banger("vm", "rm", "--force", "ga")  # the restore takes the same address
    time.sleep(PAUSE_SECONDS)  # the cause under test: the snapshot ageing
    restored = b.banger("vm", "create", "gb", "--from-snapshot", "gs")
    assert json.loads(b.banger("vm", "show", "gb", "--json").stdout)["agent"] == "available"
    offset = guest_clock_offset(b, "gb")
    assert abs(offset) <= SLACK, (
        f"the restored guest's clock is {offset:+.1f}s off the host's; restore said:\n"
        + restored.stdout
        + restored.stderr
    )
    b.banger("vm", "rm", "--force", "gb")
    b.banger("vm", "snapshot-rm", "gs")


def test_a_systemd_guest_runs_the_agent_too(b: Banger) -> None:
    """systemd starts qemu-guest-agent through the package's udev rule (the fast init by hand)."""
    b.banger("vm", "create", "--name", "gsd", "--init", "systemd", "--start")
    assert json.loads(b.banger("vm", "show", "gsd", "--json").stdout)["agent"] == "available"
    b.banger("vm", "rm", "--force", "gsd")
