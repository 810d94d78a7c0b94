"""A cold boot through bangerd (issue #19): QEMU boots the kernel's PVH ``vmlinux``,
and ``vm logs --boot-timeline`` / ``vm show`` report the last boot's phases.

The suite's Debian kernel has the PVH note, so ``kernel show`` says PVH boot is
available and the VM's QEMU is given ``vmlinux`` (its command line, read from
``/proc``). The timeline of a fast-init boot has every phase, in order, timed
by bangerd's wall clock, with the kernel's printk times where the line has one.
After a stop and a second start, the timeline is the second boot's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import KERNEL_NAME, Banger, js
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]
PHASES = ["vmm_start", "kernel", "initramfs", "init", "sshd", "ssh"]


def check_timeline(b: Banger, name: str) -> list[dict[str, Any]]:
    shown = js(b, "vm", "logs", name, "--boot-timeline")
    assert shown["vm"] == name and shown["source"] == "bangerd"
    phases = shown["phases"]
    assert [p["phase"] for p in phases] == PHASES, phases
    seconds = [p["seconds"] for p in phases]
    assert None not in seconds and seconds[0] == 0.0
    assert seconds == sorted(seconds), phases
    kernel = {p["phase"]: p["kernel"] for p in phases}
    assert kernel["kernel"] == 0.0
    assert 0 < kernel["initramfs"] < kernel["init"]
    return phases  # type: ignore[no-any-return]


def test_pvh_boot_and_its_timeline(b: Banger) -> None:
    assert "pvh boot: yes" in " ".join(b.banger("kernel", "show", KERNEL_NAME).stdout.split())

    b.banger("vm", "create", "tl", "--init", "fast", "--start")
    detail = js(b, "vm", "show", "tl")
    argv = Path(f"/proc/{detail['pid']}/cmdline").read_bytes().split(b"\0")
    assert Path(argv[argv.index(b"-kernel") + 1].decode()).name == "vmlinux"
    first = check_timeline(b, "tl")
    assert [p["phase"] for p in detail["boot_timeline"]] == PHASES
    text = b.banger("vm", "logs", "tl", "--boot-timeline").stdout
    assert "first kernel line" in text and "first SSH answer" in text
    assert "s to SSH (kernel " in b.banger("vm", "show", "tl").stdout

    refused = b.banger("vm", "logs", "tl", "--boot-timeline", "--follow", check=False)
    assert refused.returncode == 2 and "--follow: not with --boot-timeline" in refused.stderr

    # A second cold boot: the console log is appended to, the timeline is the new boot's.
    b.banger("vm", "stop", "tl")
    b.banger("vm", "start", "tl")
    second = check_timeline(b, "tl")
    assert second != first
    b.banger("vm", "rm", "tl")
