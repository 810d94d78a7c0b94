"""Boot proof: the pulled Debian kernel + banger's initramfs under QEMU microvm (TCG).

The root disks are tiny ext4 images holding a static busybox; the guest's
/sbin/init prints what the initramfs set up and powers off. The only NIC is on
a QEMU hub with nothing else attached, so no packet leaves QEMU. Each boot has
a 60 s timeout and one retry (the recipe's rare TSC-calibration hang).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from banger.vmm.bootargs import BootSpec, host_tsc_khz, kernel_cmdline
from tests.kernel_cache import cached_debian_kernel

pytestmark = [pytest.mark.guest, pytest.mark.slow]

BOOT_TIMEOUT = 60
MARKER = "BANGER-KERNEL-TEST-OK"
GUEST_INIT = f"""#!/bin/busybox sh
export PATH=/bin
/bin/busybox mount -t proc proc /proc
h=$(/bin/busybox hostname)
echo "identity: uname=$h hostname=$(cat /etc/hostname) $(cat /etc/resolv.conf)"
/bin/busybox ip -4 addr show dev eth0
/bin/busybox ip route
echo {MARKER}
/bin/busybox poweroff -f
"""
SPEC = BootSpec(
    ip="10.0.2.15",
    gateway="10.0.2.2",
    prefix=24,
    hostname="kt-guest",
    dns="10.0.2.3",
    tsc_khz=host_tsc_khz(),
)


def root_disk(tmp: Path, *, with_init: bool) -> Path:
    tree = tmp / "tree"
    for d in ("bin", "sbin", "dev", "proc", "sys", "etc"):
        (tree / d).mkdir(parents=True)
    shutil.copyfile("/bin/busybox", tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    (tree / "bin/sh").symlink_to("busybox")
    (tree / "bin/cat").symlink_to("busybox")
    (tree / "etc/hostname").write_text("image-default\n")
    (tree / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    if with_init:
        (tree / "sbin/init").write_text(GUEST_INIT)
        (tree / "sbin/init").chmod(0o755)
    disk = tmp / "root.ext4"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, disk], check=True)
    return disk


def boot(tmp: Path, disk: Path | None, cmdline: str) -> str:
    """Boot once (retrying once on a timeout); return the console log."""
    kernel = cached_debian_kernel()
    for attempt in (1, 2):
        console = tmp / f"console-{attempt}.log"
        argv = [
            "qemu-system-x86_64",
            *("-M", "microvm", "-accel", "tcg,tb-size=64", "-cpu", "max", "-m", "256"),
            *("-nodefaults", "-nographic", "-no-reboot", "-serial", f"file:{console}"),
            *("-kernel", str(kernel / "vmlinuz"), "-initrd", str(kernel / "initrd.img")),
            *("-append", cmdline),
            *("-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-device,netdev=n0"),
        ]
        if disk is not None:
            argv += [
                *("-drive", f"id=root,file={disk},format=raw,if=none,cache=unsafe"),
                *("-device", "virtio-blk-device,drive=root"),
            ]
        try:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=BOOT_TIMEOUT,
                check=True,
            )
        except subprocess.TimeoutExpired:
            if attempt == 2:
                pytest.fail(
                    f"guest did not power off in {BOOT_TIMEOUT}s twice:\n{console.read_text()}"
                )
            continue
        return console.read_text(errors="replace")
    raise AssertionError("unreachable")


def test_boots_into_the_root_disk_with_the_contract_applied(tmp_path: Path) -> None:
    console = boot(tmp_path, root_disk(tmp_path, with_init=True), kernel_cmdline(SPEC))
    assert MARKER in console, console
    assert "identity: uname=kt-guest hostname=kt-guest nameserver 10.0.2.3" in console, console
    assert "inet 10.0.2.15/24" in console, console
    assert "default via 10.0.2.2 dev eth0" in console, console
    assert "insmod" not in console, console  # every module loaded


def test_missing_init_is_reported_on_the_console_and_powers_off(tmp_path: Path) -> None:
    console = boot(tmp_path, root_disk(tmp_path, with_init=False), kernel_cmdline(SPEC))
    assert "banger-initramfs: init /sbin/init not found in root filesystem" in console, console
    assert MARKER not in console
    assert "Kernel panic" not in console, console


def test_missing_root_disk_is_reported_on_the_console_and_powers_off(tmp_path: Path) -> None:
    console = boot(tmp_path, None, kernel_cmdline(SPEC))
    assert "banger-initramfs: cannot mount /dev/vda" in console, console
    assert "Kernel panic" not in console, console
