"""Each VMM driver names where its VMs' guest agent is reached (issue #18 item 1).

The daemon's agent uses (readiness, clock, freeze/thaw, shutdown) never ask which
driver a VM runs on: ``Pipeline.agent_endpoint`` asks the VM's driver, and these
are the answers — QEMU's virtio-serial socket as is, Firecracker's vsock socket
with the guest port ``CONNECT`` goes to, plain and jailed alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from banger.daemon.vms.jailed import JailedFirecracker
from banger.guest.agent import VSOCK_PORT, AgentEndpoint
from banger.helper.client import HelperClient
from banger.vmm.base import Disk, DriverFiles, LaunchSpec
from banger.vmm.bootargs import BootSpec
from banger.vmm.firecracker import FirecrackerDriver
from banger.vmm.firecracker.jailer import JAIL_AGENT_SOCKET, JAIL_SOCKET
from banger.vmm.firecracker.plan import VMFiles, boot_requests
from banger.vmm.qemu import QemuDriver

SOCK = Path("/r/vm-v1.qga")
D = Path("/s/vms/v1")
NEUTRAL = LaunchSpec(
    vm_id="v1",
    vcpus=1,
    memory_mib=256,
    kernel=Path("/s/kernels/k1/vmlinuz"),
    initrd=None,
    cmdline="",
    boot=BootSpec("172.30.0.2", "172.30.0.1", 24, "box", "172.30.0.1", "fast"),
    root_disk=Disk(D / "root.ext4"),
    work_disk=D / "work.ext4",
    console_log=D / "console.log",
    control_socket=Path("/r/vm-v1.qmp"),
    vmm_log=D / "vmm.log",
    mac="02:11:22:33:44:55",
    tap_name="bgtap0",
    accelerator="kvm",
    agent_socket=SOCK,
)
FILES = DriverFiles("k1", Path("/s/kernels/k1/vmlinux"), "", Path("/r/vm-v1.fc"))


def test_qemu_reaches_the_agent_on_its_virtio_serial_socket() -> None:
    assert QemuDriver().agent_endpoint(SOCK) == AgentEndpoint(SOCK, None)


def test_firecracker_reaches_it_through_the_vsock_socket_and_the_guest_port() -> None:
    assert FirecrackerDriver().agent_endpoint(SOCK) == AgentEndpoint(SOCK, VSOCK_PORT)
    jailed = JailedFirecracker(HelperClient(Path("/nonexistent/helper.sock")))
    assert jailed.agent_endpoint(SOCK) == AgentEndpoint(SOCK, VSOCK_PORT)


def test_firecracker_keeps_the_agent_socket_as_its_vsock_uds_path() -> None:
    spec = FirecrackerDriver().adapt_spec(NEUTRAL, FILES)
    assert spec.agent_socket == SOCK
    (vsock,) = [r for r in boot_requests(spec, VMFiles.for_spec(spec)) if r.path == "/vsock"]
    assert vsock.body == {"guest_cid": 3, "uds_path": str(SOCK)}
    without = FirecrackerDriver().adapt_spec(dataclasses.replace(NEUTRAL, agent_socket=None), FILES)
    assert [
        r for r in boot_requests(without, VMFiles.for_spec(without)) if r.path == "/vsock"
    ] == []


def test_in_the_jail_the_vsock_sits_beside_the_api_socket_in_the_owners_run() -> None:
    """The jail's /run is the one directory there the owner's Firecracker may bind in."""
    assert JAIL_AGENT_SOCKET.rsplit("/", 1)[0] == JAIL_SOCKET.rsplit("/", 1)[0] == "/run"
    spec = FirecrackerDriver().adapt_spec(NEUTRAL, FILES)
    mapping = {SOCK: JAIL_AGENT_SOCKET}
    (vsock,) = [
        r
        for r in boot_requests(spec, VMFiles.for_spec(spec), path=lambda p: mapping.get(p, "/x"))
        if r.path == "/vsock"
    ]
    assert vsock.body == {"guest_cid": 3, "uds_path": "/run/agent.vsock"}
