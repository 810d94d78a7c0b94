from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.vmm.base import Disk
from banger.vmm.qemu import qemu_argv
from tests.qemu_support import SPEC, D

WORK = "id=work,file=/s/vms/v1/work.ext4,format=raw,if=none,cache=writeback,discard=unmap"

COMMON_HEAD = [
    "-name", "v1,process=banger-v1",
    "-M", "microvm",
]  # fmt: skip
COMMON_MID = [
    "-m", "512",
    "-smp", "2",
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    "-chardev", "file,id=con,path=/s/vms/v1/console.log,append=on",
    "-serial", "chardev:con",
    "-chardev", "socket,id=qmp,fd=4,server=on,wait=off",
    "-mon", "chardev=qmp,mode=control",
    "-kernel", "/s/kernels/k1/vmlinuz",
]  # fmt: skip


def test_tcg_qcow2_with_initrd_and_tap_fd() -> None:
    assert qemu_argv(SPEC) == [
        "qemu-system-x86_64",
        *COMMON_HEAD,
        "-accel", "tcg,tb-size=64", "-cpu", "max",
        *COMMON_MID,
        "-initrd", "/s/kernels/k1/initrd.img",
        "-append", "console=ttyS0 root=/dev/vda rw",
        "-drive",
        "id=root,file=/s/vms/v1/root.qcow2,format=qcow2,if=none,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-device,drive=root",
        "-drive", WORK,
        "-device", "virtio-blk-device,drive=work",
        "-netdev", "tap,id=n0,fd=3",
        "-device", "virtio-net-device,netdev=n0,mac=02:11:22:33:44:55",
    ]  # fmt: skip


def test_kvm_raw_without_initrd_by_tap_name() -> None:
    spec = dataclasses.replace(
        SPEC,
        accelerator="kvm",
        initrd=None,
        root_disk=Disk(D / "root.ext4", "raw", "writeback", read_only=True),
        tap_fd=None,
        cmdline="console=ttyS0 init=/sbin/banger-fast-init",
    )
    assert qemu_argv(spec, binary="/opt/qemu/bin/qemu-system-x86_64") == [
        "/opt/qemu/bin/qemu-system-x86_64",
        *COMMON_HEAD,
        "-accel", "kvm", "-cpu", "host",
        *COMMON_MID,
        "-append", "console=ttyS0 init=/sbin/banger-fast-init",
        "-drive",
        "id=root,file=/s/vms/v1/root.ext4,format=raw,if=none,cache=writeback,discard=unmap,readonly=on",
        "-device", "virtio-blk-device,drive=root",
        "-drive", WORK,
        "-device", "virtio-blk-device,drive=work",
        "-netdev", "tap,id=n0,ifname=bgtap0,script=no,downscript=no",
        "-device", "virtio-net-device,netdev=n0,mac=02:11:22:33:44:55",
    ]  # fmt: skip


def test_no_network_no_work_disk() -> None:
    argv = qemu_argv(dataclasses.replace(SPEC, tap_fd=None, tap_name=None, work_disk=None))
    assert "-netdev" not in argv
    assert not any("virtio-net" in a for a in argv)
    assert [a for a in argv if a.startswith("id=")] == [
        "id=root,file=/s/vms/v1/root.qcow2,format=qcow2,if=none,cache=unsafe,discard=unmap"
    ]


def test_root_disk_comes_before_work_disk() -> None:
    argv = qemu_argv(SPEC)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith("id=root,") and drives[1].startswith("id=work,")


def test_never_daemonizes_and_has_no_default_devices() -> None:
    argv = qemu_argv(SPEC)
    assert "-daemonize" not in argv
    assert "-nodefaults" in argv and "-no-reboot" in argv


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"vm_id": "a,b"}, "vm_id"),
        ({"vm_id": "../x"}, "vm_id"),
        ({"kernel": Path("/k,format=raw")}, "kernel"),
        ({"kernel": Path("relative/vmlinuz")}, "kernel"),
        ({"root_disk": Disk(Path("/x,file=/etc/shadow"))}, "root_disk"),
        ({"work_disk": Path("/w\n")}, "work_disk"),
        ({"console_log": Path("/c,append=off")}, "console_log"),
        ({"mac": "02:11:22:33:44"}, "mac"),
        ({"mac": "03:11:22:33:44:55"}, "mac"),
        ({"mac": "02:11:22:33:44:55,netdev=x"}, "mac"),
        ({"tap_name": "tap0,script=/bin/evil"}, "tap_name"),
        ({"tap_name": "a" * 16}, "tap_name"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 16}, "memory_mib"),
        ({"accelerator": "hvf"}, "accelerator"),
        ({"cmdline": "a\nb"}, "cmdline"),
        ({"agent_socket": Path("/r/a.qga,server=off")}, "agent_socket"),
        ({"agent_socket": Path("rel.qga")}, "agent_socket"),
    ],
)
def test_refuses_injection(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        qemu_argv(dataclasses.replace(SPEC, **changes))  # type: ignore[arg-type]
    assert info.value.message.startswith(f"{field}:")


def test_a_pvh_vmlinux_is_booted_instead_of_the_bzimage() -> None:
    """With the PVH ELF QEMU skips the guest's own decompression; the rest is unchanged."""
    pvh = dataclasses.replace(SPEC, pvh_kernel=Path("/s/kernels/k1/vmlinux"))
    argv, plain = qemu_argv(pvh), qemu_argv(SPEC)
    assert argv[argv.index("-kernel") + 1] == "/s/kernels/k1/vmlinux"
    assert plain[plain.index("-kernel") + 1] == "/s/kernels/k1/vmlinuz"
    assert argv.count("-kernel") == 1
    same = [a for a in argv if a != "/s/kernels/k1/vmlinux"]
    assert same == [a for a in plain if a != "/s/kernels/k1/vmlinuz"]
    with pytest.raises(InvalidArgument, match="pvh_kernel"):
        qemu_argv(dataclasses.replace(SPEC, pvh_kernel=Path("vmlinux")))


def test_the_agent_channel_is_a_virtio_serial_port_after_every_other_device() -> None:
    """Last, so adding it leaves the other devices' virtio-mmio slots where they were."""
    assert "virtio-serial-device" not in qemu_argv(SPEC)
    argv = qemu_argv(dataclasses.replace(SPEC, agent_socket=Path("/r/vm-v1.qga")))
    assert argv[-6:] == [
        "-device", "virtio-serial-device",
        "-chardev", "socket,id=qga0,path=/r/vm-v1.qga,server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]  # fmt: skip
