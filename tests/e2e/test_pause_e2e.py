"""``banger vm pause|resume`` on the QEMU driver with a real guest (QMP stop/cont).

A paused guest's vCPUs do not run: a TCP connect to its sshd from inside the
namespace gets no SYN-ACK and times out (bounded to a few seconds); after
``vm resume`` the same connect reads the SSH banner and ``vm ssh`` works.
``vm show``/``vm list`` say ``paused`` in between; a paused VM can be stopped.
"""

from __future__ import annotations

import json

import pytest

from banger.errors import Conflict
from tests.e2e.harness import Banger, ssh_banner
from tests.support import assert_refusal, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]


def state(b: Banger, name: str) -> str:
    return str(json.loads(b.banger("vm", "show", name, "--json").stdout)["state"])


def probe(b: Banger, ip: str) -> tuple[int, str]:
    """A paused guest must not answer: any wait shows it, 3 s is the behaviour's bound."""
    return ssh_banner(b, ip, timeout=3)


def answers(b: Banger, ip: str) -> tuple[int, str]:
    """A running guest answers; the wait is a hang bound (TCG on a loaded machine)."""
    return ssh_banner(b, ip, timeout=60)


def test_a_paused_guest_answers_nothing_and_a_resumed_one_does(b: Banger) -> None:
    b.banger("vm", "create", "--name", "pz", "--init", "fast", "--start")
    shown = json.loads(b.banger("vm", "show", "pz", "--json").stdout)
    ip = shown["ip"]
    assert shown["vmm"] == "qemu" and shown["vmm_reason"].startswith("auto:")
    code, banner = answers(b, ip)
    assert code == 0 and banner.startswith("SSH-2.0-"), banner

    b.banger("vm", "pause", "pz")
    assert state(b, "pz") == "paused"
    listed = json.loads(b.banger("vm", "list", "--json").stdout)
    assert [v["state"] for v in listed if v["name"] == "pz"] == ["paused"]
    code, out = probe(b, ip)
    assert code == 3 and "timed out" in out, out
    again = b.banger("vm", "pause", "pz", check=False)
    assert_refusal(again, Conflict.exit_code, "already paused", hint="banger vm resume pz")

    b.banger("vm", "resume", "pz")
    assert state(b, "pz") == "running"
    code, banner = answers(b, ip)
    assert code == 0 and banner.startswith("SSH-2.0-"), banner
    assert b.banger("vm", "ssh", "pz", "--", "echo", "back").stdout.strip() == "back"

    # A paused VM stops cleanly: it is resumed first so the guest can power off.
    b.banger("vm", "pause", "pz")
    b.banger("vm", "stop", "pz")
    assert state(b, "pz") == "stopped"
    not_running = b.banger("vm", "resume", "pz", check=False)
    assert_refusal(not_running, Conflict.exit_code, "not paused")
    b.banger("vm", "rm", "pz")
