"""Both drivers' command lines for one driver-neutral launch spec, pinned byte for byte.

The daemon builds one :class:`LaunchSpec` with the guest's boot facts
(``boot``) and no command line; each driver's ``adapt_spec`` writes its own.
The expected lines were produced by the code before the adaptation moved into
the drivers (the daemon then built the line per driver), so they also say the
move changed nothing a guest sees.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger.daemon.vms.jailed import JailedFirecracker
from banger.errors import InvalidArgument
from banger.helper.client import HelperClient
from banger.vmm.base import Disk, DriverFiles, LaunchSpec
from banger.vmm.bootargs import BootSpec
from banger.vmm.firecracker import FirecrackerDriver
from banger.vmm.firecracker.driver import firecracker_argv
from banger.vmm.firecracker.plan import VMFiles, boot_requests
from banger.vmm.qemu import QemuDriver, qemu_argv

D = Path("/s/vms/v1")
BOOT = BootSpec("172.30.0.2", "172.30.0.1", 24, "box", "172.30.0.1", "fast", tsc_khz=2599998)
#: What the daemon's launch_spec builds: the tap both ways, bzImage + PVH vmlinux,
#: the QMP and agent sockets, and ``boot`` instead of a command line.
NEUTRAL = LaunchSpec(
    vm_id="v1",
    vcpus=2,
    memory_mib=512,
    kernel=Path("/s/kernels/k1/vmlinuz"),
    initrd=Path("/s/kernels/k1/initrd.img"),
    cmdline="",
    boot=BOOT,
    root_disk=Disk(D / "root.ext4", "raw", "unsafe"),
    work_disk=D / "work.ext4",
    console_log=D / "console.log",
    control_socket=Path("/r/vm-v1.qmp"),
    vmm_log=D / "vmm.log",
    mac="02:11:22:33:44:55",
    tap_fd=17,
    tap_name="bgtap0",
    accelerator="tcg",
    pvh_kernel=Path("/s/kernels/k1/vmlinux"),
    agent_socket=Path("/r/vm-v1.agent"),
)
FILES = DriverFiles(
    kernel_name="k1",
    vmlinux=Path("/s/kernels/k1/vmlinux"),
    no_vmlinux="",
    api_socket=Path("/r/vm-v1.fc"),
)

CONTRACT = (
    "ip=172.30.0.2::172.30.0.1:255.255.255.0:box:eth0:off:172.30.0.1 "
    "banger.work=/dev/vdb systemd.hostname=box init=/sbin/banger-fast-init"
)
HEAD = "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 pty.legacy_count=0"
QEMU_TCG = f"{HEAD} {CONTRACT} tsc_early_khz=2599998 tsc=reliable"
QEMU_KVM = f"{HEAD} {CONTRACT}"
#: What a Firecracker VM records (and a snapshot of it saves) ...
FIRECRACKER = f"{HEAD} reboot=k {CONTRACT}"
#: ... and what Firecracker's ``PUT /boot-source`` gets.
FIRECRACKER_BOOT_ARGS = (
    "i8042.noaux i8042.nomux console=ttyS0 net.ifnames=0 panic=-1 pty.legacy_count=0 "
    f"reboot=k {CONTRACT}"
)


def test_qemu_under_tcg_gets_the_contract_and_the_tsc_hint() -> None:
    spec = QemuDriver().adapt_spec(NEUTRAL, FILES)
    assert spec.boot is None and spec.cmdline == QEMU_TCG
    assert qemu_argv(spec) == [
        "qemu-system-x86_64",
        "-name", "v1,process=banger-v1",
        "-M", "microvm",
        "-accel", "tcg,tb-size=64", "-cpu", "max",
        "-m", "512",
        "-smp", "2",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-chardev", "file,id=con,path=/s/vms/v1/console.log,append=on",
        "-serial", "chardev:con",
        "-chardev", "socket,id=qmp,fd=4,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-kernel", "/s/kernels/k1/vmlinux",
        "-initrd", "/s/kernels/k1/initrd.img",
        "-append", QEMU_TCG,
        "-drive", f"id=root,file={D}/root.ext4,format=raw,if=none,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-device,drive=root",
        "-drive", f"id=work,file={D}/work.ext4,format=raw,if=none,cache=writeback,discard=unmap",
        "-device", "virtio-blk-device,drive=work",
        "-netdev", "tap,id=n0,fd=3",
        "-device", "virtio-net-device,netdev=n0,mac=02:11:22:33:44:55",
        "-device", "virtio-serial-device",
        "-chardev", "socket,id=qga0,path=/r/vm-v1.agent,server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]  # fmt: skip


def test_qemu_under_kvm_drops_the_tsc_hint() -> None:
    spec = QemuDriver().adapt_spec(dataclasses.replace(NEUTRAL, accelerator="kvm"), FILES)
    assert spec.cmdline == QEMU_KVM
    assert qemu_argv(spec)[qemu_argv(spec).index("-append") + 1] == QEMU_KVM


@pytest.mark.parametrize("accelerator", ["tcg", "kvm"])
def test_firecracker_gets_reboot_k_never_a_tsc_hint(accelerator: str) -> None:
    neutral = dataclasses.replace(NEUTRAL, accelerator=accelerator)  # type: ignore[arg-type]
    spec = FirecrackerDriver().adapt_spec(neutral, FILES)
    assert spec.boot is None and spec.cmdline == FIRECRACKER
    assert firecracker_argv("firecracker", spec) == [
        "firecracker", "--api-sock", "/r/vm-v1.fc", "--id", "v1",
    ]  # fmt: skip
    (boot_source,) = [
        r for r in boot_requests(spec, VMFiles.for_spec(spec)) if r.path == "/boot-source"
    ]
    assert boot_source.body == {
        "kernel_image_path": "/s/kernels/k1/vmlinux",
        "boot_args": FIRECRACKER_BOOT_ARGS,
        "initrd_path": "/s/kernels/k1/initrd.img",
    }


def test_the_jailed_driver_adapts_as_the_plain_one(tmp_path: Path) -> None:
    jailed = JailedFirecracker(HelperClient(tmp_path / "no-helper.sock"))
    assert jailed.adapt_spec(NEUTRAL, FILES) == FirecrackerDriver().adapt_spec(NEUTRAL, FILES)


def test_a_restore_keeps_the_line_its_snapshot_saved() -> None:
    saved = dataclasses.replace(NEUTRAL, cmdline="console=ttyS0 saved=1", boot=None)
    assert QemuDriver().adapt_spec(saved, FILES).cmdline == "console=ttyS0 saved=1"
    assert FirecrackerDriver().adapt_spec(saved, FILES).cmdline == "console=ttyS0 saved=1"


def test_a_spec_no_driver_adapted_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidArgument, match=r"^boot:"):
        qemu_argv(NEUTRAL)
    with pytest.raises(InvalidArgument, match=r"^boot:"):
        boot_requests(NEUTRAL, VMFiles.for_spec(NEUTRAL))
