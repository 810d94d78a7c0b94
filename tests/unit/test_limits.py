"""Every VM limit has one home (banger.limits): what the config accepts, every layer accepts.

``vm.vcpus = 48`` used to load (the config allowed 64) and then fail every
``vm create`` (the daemon, the drivers and the jailer allowed 32). These
tests walk each bound through each layer that checks it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from banger import limits
from banger.config import load_config
from banger.daemon.vms.names import check_memory, check_vcpus
from banger.errors import ConfigError, InvalidArgument
from banger.vmm.base import Disk, LaunchSpec
from banger.vmm.firecracker.jailer import (
    JailerPolicy,
    JailerRequestInvalid,
    validate_jailer_request,
)

HOME = Path("/home/alice")
STATE = Path("/var/lib/banger")
POLICY = JailerPolicy(STATE, 1000, 1000, Path("/usr/bin/jailer"), Path("/usr/bin/firecracker"))
#: A host big enough that only banger's own limits apply.
BIG_HOST_CPUS = 4 * limits.MAX_VCPUS
BIG_HOST_MIB = 4 * limits.MAX_MEMORY_MIB


def jail_request(vcpus: int, memory_mib: int) -> dict[str, object]:
    vm = STATE / "vms" / "t_1"
    return {
        "vm_id": "t_1",
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "kernel": str(STATE / "kernels" / "k1" / "vmlinux"),
        "initrd": None,
        "root_disk": str(vm / "root.ext4"),
        "root_read_only": False,
        "work_disk": str(vm / "work.ext4"),
        "console_log": str(vm / "console.log"),
        "log": str(vm / "firecracker.log"),
        "metrics": str(vm / "firecracker.metrics"),
        "netns": None,
    }


def launch_spec(vcpus: int, memory_mib: int) -> LaunchSpec:
    vm = STATE / "vms" / "v1"
    return LaunchSpec(
        vm_id="v1",
        vcpus=vcpus,
        memory_mib=memory_mib,
        kernel=STATE / "kernels" / "k1" / "vmlinuz",
        initrd=None,
        cmdline="console=ttyS0 root=/dev/vda rw",
        root_disk=Disk(vm / "root.qcow2", "qcow2", "unsafe"),
        work_disk=vm / "work.ext4",
        console_log=vm / "console.log",
        control_socket=Path("/r/vm-v1.qmp"),
        vmm_log=vm / "qemu.log",
        mac="02:11:22:33:44:55",
    )


def config_vm(tmp_path: Path, body: str) -> tuple[int, int]:
    path = tmp_path / "config.toml"
    path.write_text(f"[vm]\n{body}\n")
    vm = load_config(path, home=HOME).vm
    return vm.vcpus, vm.memory_mib


@pytest.mark.parametrize(
    ("vcpus", "memory_mib"),
    [
        (limits.MIN_VCPUS, limits.MIN_MEMORY_MIB),
        (limits.MAX_VCPUS, limits.MAX_MEMORY_MIB),
    ],
)
def test_every_bound_the_config_accepts_passes_every_layer(
    tmp_path: Path, vcpus: int, memory_mib: int
) -> None:
    loaded = config_vm(tmp_path, f"vcpus = {vcpus}\nmemory_mib = {memory_mib}")
    assert loaded == (vcpus, memory_mib)
    assert check_vcpus(vcpus, host_cpus=BIG_HOST_CPUS) == vcpus
    assert check_memory(memory_mib, host_mib=BIG_HOST_MIB) == memory_mib
    request = validate_jailer_request(jail_request(vcpus, memory_mib), POLICY)
    assert (request.vcpus, request.memory_mib) == (vcpus, memory_mib)
    launch_spec(vcpus, memory_mib).validate()  # what both drivers check before launching


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vcpus", limits.MAX_VCPUS + 1),
        ("vcpus", 48),
        ("vcpus", limits.MIN_VCPUS - 1),
        ("memory_mib", limits.MIN_MEMORY_MIB - 1),
        ("memory_mib", limits.MAX_MEMORY_MIB + 1),
    ],
)
def test_every_value_past_a_bound_is_refused_by_the_config_and_every_layer(
    tmp_path: Path, field: str, value: int
) -> None:
    with pytest.raises(ConfigError, match=rf"vm\.{field}: must be between"):
        config_vm(tmp_path, f"{field} = {value}")
    vcpus = value if field == "vcpus" else limits.MIN_VCPUS
    memory = value if field == "memory_mib" else limits.MIN_MEMORY_MIB
    with pytest.raises(InvalidArgument, match="^cpus: " if field == "vcpus" else "^memory: "):
        check_vcpus(vcpus, host_cpus=BIG_HOST_CPUS)
        check_memory(memory, host_mib=BIG_HOST_MIB)
    with pytest.raises(JailerRequestInvalid, match=field):
        validate_jailer_request(jail_request(vcpus, memory), POLICY)
    with pytest.raises(InvalidArgument, match=f"^{field}: must be between"):
        launch_spec(vcpus, memory).validate()


def test_disk_sizes_follow_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[vm]\nwork_disk_size = {limits.MIN_DISK_BYTES}\n")
    assert load_config(path, home=HOME).vm.work_disk_size == limits.MIN_DISK_BYTES
    path.write_text(f"[vm]\nwork_disk_size = {limits.MIN_DISK_BYTES - limits.MIB}\n")
    with pytest.raises(ConfigError, match=r"vm\.work_disk_size: must be between 64M and 16T"):
        load_config(path, home=HOME)
