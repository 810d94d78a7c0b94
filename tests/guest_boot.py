"""A real Debian guest booted through the QEMU driver at library level.

:func:`prepare` lays out what bangerd would (a qcow2 overlay on the cached test
image, a provisioned work disk, per-VM SSH keys, the kernel command line, the
launch spec); :func:`in_netns`/:func:`run_in_thread_netns` run the SSH client on a
thread that joined the guest's namespace. Shared by tests/integration/test_qemu_guest.py
and the boot benchmark (bench/boot.py).
"""

from __future__ import annotations

import asyncio
import re
import struct
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from banger.disk.workdisk import HostKey, Provisioning, create_work_disk, provision_work_disk
from banger.guest.ssh import SSHTarget
from banger.kernels.vmlinux import qemu_pvh_image
from banger.vmm.base import Disk, LaunchSpec, VMMProcess, stable_mac
from banger.vmm.bootargs import BootSpec, InitMode, host_tsc_khz, kernel_cmdline
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.qemu_support import on_netns_thread
from tests.sshd import keygen
from tests.support import Netns

T = TypeVar("T")
GUEST_IP, GATEWAY = "172.30.9.2", "172.30.9.1"


def in_netns(ns: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh loop in a thread that joined namespace ``ns``."""
    return on_netns_thread(ns, lambda: asyncio.run(_awaited(work)))


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


async def run_in_thread_netns(ns: str, work: Callable[[], Awaitable[T]]) -> T:
    return await asyncio.to_thread(in_netns, ns, work)


@dataclass
class Guest:
    spec: LaunchSpec
    target: SSHTarget
    ns: Netns
    proc: VMMProcess | None = None


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
