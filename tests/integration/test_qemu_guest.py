"""Boot a real Debian guest through the QEMU driver and reach it over SSH.

Everything the boot contract promises, end to end at library level: the kernel
command line from ``banger.vmm.bootargs``, a qcow2 root overlay and a provisioned
work disk, the tap handed to QEMU as a descriptor, SSH with the pinned per-VM
host key, and stop (ACPI power button for systemd guests).
The guest's network lives in a throwaway namespace; the SSH client runs on a
thread that has joined that namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from banger.disk.workdisk import HostKey, Provisioning, create_work_disk, provision_work_disk
from banger.guest.ssh import SSHTarget, run, wait_for_ssh
from banger.kernels.vmlinux import qemu_pvh_image
from banger.procinfo import is_same_process
from banger.vmm.base import Disk, LaunchSpec, VMMProcess, stable_mac
from banger.vmm.bootargs import BootSpec, InitMode, host_tsc_khz, kernel_cmdline
from banger.vmm.qemu import QemuDriver
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.qemu_support import CLONE_NEWNET, open_tap_in_netns
from tests.support import Netns, needs_root, netns

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

T = TypeVar("T")
GUEST_IP, GATEWAY = "172.30.9.2", "172.30.9.1"


def in_netns(ns: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh loop in a thread that joined namespace ``ns``."""
    box: dict[str, object] = {}

    def thread() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{ns}") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")

            async def main() -> T:
                return await work()

            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


async def run_in_thread_netns(ns: str, work: Callable[[], Awaitable[T]]) -> T:
    return await asyncio.to_thread(in_netns, ns, work)


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Guest:
    spec: LaunchSpec
    target: SSHTarget
    ns: Netns
    proc: VMMProcess | None = None


@pytest.fixture
def guest_net() -> Iterator[Netns]:
    with netns() as ns:
        ns.run("ip", "link", "add", "br0", "type", "bridge")
        ns.run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        ns.run("ip", "link", "set", "br0", "up")
        yield ns


def without_pvh_note(kernel: Path, d: Path) -> Path:
    """A copy of the kernel directory whose ``vmlinux`` lost its PVH note (a kernel built
    without CONFIG_PVH): the note's type 18 is rewritten, nothing else moves."""
    out = d / "kernel-nopvh"
    out.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (out / name).symlink_to(kernel / name)
    data = bytearray((kernel / "vmlinux").read_bytes())
    # The Xen PHYS32_ENTRY note: namesz 4, descsz (4 or 8: the entry address), type 18, "Xen".
    notes = list(re.finditer(rb"\x04\0\0\0[\x04\x08]\0\0\0\x12\0\0\0Xen\0", data))
    assert len(notes) == 1
    struct.pack_into("<I", data, notes[0].start() + 8, 0x7FFF)
    (out / "vmlinux").write_bytes(bytes(data))
    return out


def prepare(d: Path, ns: Netns, init_mode: InitMode, tap_fd: int, pvh: bool = True) -> Guest:
    kernel = cached_debian_kernel()
    if not pvh:
        kernel = without_pvh_note(kernel, d)
    image = cached_debian_image()
    root = d / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image / "rootfs.ext4", root],
        check=True,
    )
    client_pub = keygen(d / "id_ed25519")
    host_pub = keygen(d / "ssh_host_ed25519_key")
    work = create_work_disk(image / "work-seed.ext4", d / "work.ext4", 256 << 20)
    provision_work_disk(
        work,
        Provisioning(
            authorized_keys=client_pub,
            host_key=HostKey(d / "ssh_host_ed25519_key", d / "ssh_host_ed25519_key.pub"),
        ),
    )
    (d / "known_hosts").write_text(f"{GUEST_IP} {host_pub}\n")
    cmdline = kernel_cmdline(
        BootSpec(
            ip=GUEST_IP,
            gateway=GATEWAY,
            prefix=24,
            hostname="vmmtest",
            dns=GATEWAY,
            init_mode=init_mode,
            tsc_khz=host_tsc_khz(),
        )
    )
    spec = LaunchSpec(
        vm_id="g1",
        vcpus=2,
        memory_mib=512,
        kernel=kernel / "vmlinuz",
        initrd=kernel / "initrd.img",
        cmdline=cmdline,
        root_disk=Disk(root, "qcow2", "unsafe"),
        work_disk=work,
        console_log=d / "console.log",
        control_socket=d / "qmp.sock",
        vmm_log=d / "qemu.log",
        mac=stable_mac("g1"),
        tap_fd=tap_fd,
        tap_name="bgtap1",
        # What bangerd does: the vmlinux through its PVH entry when it has the note.
        pvh_kernel=qemu_pvh_image(kernel),
    )
    target = SSHTarget(GUEST_IP, d / "known_hosts", d / "id_ed25519")
    return Guest(spec, target, ns)


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

        async def ready() -> tuple[str, bool]:
            await wait_for_ssh(guest.target, timeout=120, console_log=guest.spec.console_log)
            state = await run(guest.target, ["systemctl", "is-system-running", "--wait"])
            inputs = await run(guest.target, ["cat", "/proc/bus/input/devices"])
            return state.out.strip(), "Power Button" in inputs.out

        state, has_button = await run_in_thread_netns(guest_net.name, ready)
        assert state in ("running", "degraded")
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
