"""Boot a real Debian guest through the QEMU driver and reach it over SSH.

Everything the boot contract promises, end to end at library level: the kernel
command line from ``banger.vmm.bootargs``, a qcow2 root overlay and a provisioned
work disk, the tap handed to QEMU as a descriptor, SSH with the pinned per-VM
host key, and stop (ACPI power button for systemd guests).
The guest's network lives in a throwaway namespace; the SSH client runs on a
thread that has joined that namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.guest.ssh import run, wait_for_ssh
from banger.procinfo import is_same_process
from banger.vmm.bootargs import InitMode
from banger.vmm.qemu import QemuDriver
from tests.guest_boot import GATEWAY, Guest, prepare, run_in_thread_netns
from tests.qemu_support import open_tap_in_netns
from tests.support import Netns, needs_root, netns

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]


@pytest.fixture
def guest_net() -> Iterator[Netns]:
    with netns() as ns:
        ns.run("ip", "link", "add", "br0", "type", "bridge")
        ns.run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        ns.run("ip", "link", "set", "br0", "up")
        yield ns


async def boot(
    short_tmp: Path, ns: Netns, init_mode: InitMode, pvh: bool = True
) -> tuple[Guest, QemuDriver]:
    tap_fd = open_tap_in_netns(ns.name, "bgtap1")
    try:
        ns.run("ip", "link", "set", "bgtap1", "master", "br0")
        ns.run("ip", "link", "set", "bgtap1", "up")
        guest = prepare(short_tmp, ns, init_mode, tap_fd, pvh)
        driver = QemuDriver()
        guest.proc = await driver.launch(guest.spec)
    finally:
        os.close(tap_fd)  # QEMU has its own copy
    return guest, driver


@pytest.mark.parametrize("pvh", [True, False], ids=["pvh-vmlinux", "no-pvh-note-bzimage"])
async def test_fast_guest_boots_and_answers_ssh(
    short_tmp: Path, guest_net: Netns, pvh: bool
) -> None:
    guest, driver = await boot(short_tmp, guest_net, "fast", pvh)
    proc = guest.proc
    assert proc is not None
    # The Debian kernel has the note, so QEMU gets its vmlinux; the copy without the
    # note falls back to the bzImage, and both boot.
    booted = Path(proc.argv[proc.argv.index("-kernel") + 1])
    assert booted.name == ("vmlinux" if pvh else "vmlinuz")
    try:

        async def check() -> list[str]:
            await wait_for_ssh(guest.target, timeout=90, console_log=guest.spec.console_log)
            result = await run(
                guest.target,
                ["sh", "-c", 'hostname; cat /proc/cmdline; findmnt -no SOURCE /root; echo "$0"'],
            )
            assert result.exit_status == 0, result.err
            return result.out.splitlines()

        lines = await run_in_thread_netns(guest_net.name, check)
        assert lines[0] == "vmmtest"
        assert lines[1] == guest.spec.cmdline
        assert lines[2] == "/dev/vdb"
        # The fast init ignores the ACPI button: the driver falls back to QMP quit.
        result = await driver.stop(proc, graceful_timeout=2)
        assert result.method == "quit"
        assert not is_same_process(proc.pid, proc.start_time)
    finally:
        await driver.stop(proc, graceful_timeout=0)


async def test_systemd_guest_and_the_acpi_power_button(short_tmp: Path, guest_net: Netns) -> None:
    guest, driver = await boot(short_tmp, guest_net, "systemd")
    proc = guest.proc
    assert proc is not None
    try:

        async def ready() -> tuple[str, bool, str, str]:
            await wait_for_ssh(guest.target, timeout=120, console_log=guest.spec.console_log)
            state = await run(guest.target, ["systemctl", "is-system-running", "--wait"])
            inputs = await run(guest.target, ["cat", "/proc/bus/input/devices"])
            failed = await run(guest.target, ["systemctl", "--failed", "--plain", "--no-legend"])
            sshd = await run(guest.target, ["ps", "-o", "args=", "-C", "sshd"])
            return state.out.strip(), "Power Button" in inputs.out, failed.out, sshd.out

        state, has_button, failed, sshd = await run_in_thread_netns(guest_net.name, ready)
        # The lean boot's masks leave no unit failing for want of what they removed.
        assert state == "running", failed
        # finalize's drop-in: the image's own ssh.service, with -r (no re-exec per login)
        assert "sshd -D -r [listener]" in sshd, sshd
        # microvm raises the ACPI power button through its GED device; the guest acts on
        # it only with the ACPI button driver and evdev loaded (logind reads the key).
        # Debian builds both as modules, which the initramfs must load.
        result = await driver.stop(proc, graceful_timeout=60 if has_button else 5)
        console = guest.spec.console_log.read_text(errors="replace")
        if has_button:
            assert result.method == "graceful", console[-3000:]
            assert "reboot: Power down" in console
        else:
            assert result.method == "quit"
        assert not is_same_process(proc.pid, proc.start_time)
    finally:
        await driver.stop(proc, graceful_timeout=0)
