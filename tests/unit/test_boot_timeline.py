"""The boot timeline read from a real guest's console (``tests/data/console-fast-boot.log``:
a fast-init boot of the suite's Debian kernel and image under bangerd, QEMU/TCG)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from banger.guest.boot_timeline import (
    ConsoleWatch,
    Phase,
    last_boot,
    parse_console,
    phases_from_json,
    render,
)

REAL = Path(__file__).parent.parent / "data" / "console-fast-boot.log"


def test_phases_of_a_real_fast_boot() -> None:
    phases = {p.phase: p for p in parse_console(REAL.read_text())}
    assert list(phases) == ["kernel", "initramfs", "init", "sshd"]
    assert phases["kernel"].kernel == 0.0
    assert phases["initramfs"].kernel == 7.668197  # "Run /init as init process"
    assert phases["init"].kernel == 16.067514  # the initramfs's switch_root note
    # sshd -e writes "Server listening" to the console without a printk timestamp.
    assert phases["sshd"].kernel is None
    assert all(p.seconds is None for p in phases.values())  # no wall clock in a log alone


def test_only_the_last_boot_of_an_appended_log_counts() -> None:
    first = REAL.read_text()
    second = first.replace("[    7.668197] Run /init", "[    1.250000] Run /init")
    assert last_boot(first + second) == second
    phases = {p.phase: p for p in parse_console(first + second)}
    assert phases["initramfs"].kernel == 1.25


def test_a_kernel_without_initramfs_and_a_systemd_guest() -> None:
    text = (
        "[    0.000000] Linux version 6.1.192-microvm\n"
        "[    0.812000] Run /sbin/init as init process\n"
        "[    1.100000] systemd[1]: systemd 252 running in system mode\n"
        "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.\n"
    )
    phases = {p.phase: p.kernel for p in parse_console(text)}
    assert phases == {"kernel": 0.0, "init": 0.812, "sshd": None}


def test_a_phase_line_before_its_predecessor_does_not_count() -> None:
    # An sshd line cannot precede the kernel; the kernel's own "Run /init" is not init.
    text = "Server listening on 0.0.0.0 port 22.\n[    0.000000] Linux version 6.1\n"
    assert [p.phase for p in parse_console(text)] == ["kernel"]


async def test_watch_times_lines_as_they_arrive(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("an earlier boot\nServer listening on 0.0.0.0 port 22.\n")
    watch = ConsoleWatch.before_launch(console)
    lines = REAL.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if "Run /init" in line)
    async with watch:
        with open(console, "a") as f:
            f.writelines(lines[:cut])
            f.write(lines[cut][:10])  # half a line: not matched until it ends
        await asyncio.sleep(0.3)
        assert set(watch.seen) == {"kernel"}
        with open(console, "a") as f:
            f.write(lines[cut][10:])
            f.writelines(lines[cut + 1 :])
        await asyncio.sleep(0.3)
    phases = watch.timeline(time.time())
    assert [p.phase for p in phases] == ["vmm_start", "kernel", "initramfs", "init", "sshd", "ssh"]
    seconds = [p.seconds for p in phases]
    assert all(s is not None for s in seconds)
    assert seconds == sorted(seconds)  # type: ignore[type-var]
    assert seconds[2] is not None and seconds[1] is not None and seconds[2] - seconds[1] >= 0.25
    assert phases[2].kernel == 7.668197


def test_render_and_json_round_trip() -> None:
    phases = [
        Phase("vmm_start", "VMM started", 0.0),
        Phase("kernel", "first kernel line", 0.31, 0.0),
        Phase("initramfs", "initramfs /init", None, 1.6),
        Phase("ssh", "first SSH answer", 4.6),
    ]
    lines = render(phases)
    assert lines[0].split() == ["phase", "at", "step", "kernel"]
    assert lines[2].split() == ["first", "kernel", "line", "0.31", "s", "+0.31", "s", "[0.000]"]
    assert lines[3].split()[-3:] == ["-", "-", "[1.600]"]
    assert lines[4].split()[-4:] == ["s", "+4.29", "s", "-"]
    assert phases_from_json([p.to_json() for p in phases]) == phases
    assert phases_from_json("junk") == [] and phases_from_json([1, {"phase": "x"}])[0].phase == "x"
