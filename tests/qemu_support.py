"""QEMU test helpers shared by the driver, snapshot and guest tests (and the boot bench).

``halting_kernel`` is a tiny hand-made "kernel": a valid bzImage header whose
real-mode entry point is ``cli; hlt``. QEMU loads and starts it like any
kernel, and it then sits halted (using no CPU), which is enough to exercise
launch, QMP, pause/resume, stop, liveness and snapshots without a real guest.
``make_spec`` is a launch spec around it. ``open_tap_in_netns`` does what the
root helper does: open a tap inside a namespace and keep only the descriptor. ``SPEC`` is a
fixed launch spec (paths under ``D``) for the tests of QEMU's argv.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from banger.vmm.base import Disk, LaunchSpec, stable_mac

T = TypeVar("T")


def halting_kernel(path: Path) -> Path:
    image = bytearray(4096)
    image[0x1F1] = 1  # setup_sects
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x200:0x202] = b"\xeb\x66"  # jmp 0x268
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x0206)  # boot protocol 2.06
    image[0x211] = 0x01  # LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, 0x37FFFFFF)  # initrd_addr_max
    struct.pack_into("<I", image, 0x238, 2048)  # cmdline_size
    image[0x268:0x26C] = b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp back to hlt
    path.write_bytes(bytes(image))
    return path


def make_spec(d: Path, **changes: object) -> LaunchSpec:
    root = d / "root.ext4"
    if not root.exists():
        with open(root, "wb") as f:
            f.truncate(8 << 20)
        with open(d / "work.ext4", "wb") as f:
            f.truncate(4 << 20)
    spec = LaunchSpec(
        vm_id="t1",
        vcpus=1,
        memory_mib=128,
        kernel=halting_kernel(d / "vmlinuz"),
        initrd=None,
        cmdline="console=ttyS0",
        root_disk=Disk(root, "raw", "unsafe"),
        work_disk=d / "work.ext4",
        console_log=d / "console.log",
        control_socket=d / "qmp.sock",
        vmm_log=d / "qemu.log",
        mac=stable_mac("t1"),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
CLONE_NEWNET = 0x40000000


def on_netns_thread(ns: str, work: Callable[[], T]) -> T:
    """``work()`` on a thread that joined network namespace ``ns``: setns changes only
    the calling thread's namespace, so sockets it opens and children it starts live
    there while the rest of the process stays put. Its exception is re-raised here."""
    box: dict[str, Any] = {}

    def thread() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{ns}") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            box["value"] = work()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=thread, name=f"netns-{ns}")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def open_tap_in_netns(ns: str, name: str) -> int:
    """What the root helper does: open a tap inside the namespace, keep only the fd."""

    def work() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
        return fd

    return on_netns_thread(ns, work)


#: A fixed launch spec for argv tests: nothing at these paths exists or is opened.
D = Path("/s/vms/v1")
SPEC = LaunchSpec(
    vm_id="v1",
    vcpus=2,
    memory_mib=512,
    kernel=Path("/s/kernels/k1/vmlinuz"),
    initrd=Path("/s/kernels/k1/initrd.img"),
    cmdline="console=ttyS0 root=/dev/vda rw",
    root_disk=Disk(D / "root.qcow2", "qcow2", "unsafe"),
    work_disk=D / "work.ext4",
    console_log=D / "console.log",
    control_socket=Path("/r/vm-v1.qmp"),
    vmm_log=D / "qemu.log",
    mac="02:11:22:33:44:55",
    tap_fd=17,
    tap_name="bgtap0",
    accelerator="tcg",
)
