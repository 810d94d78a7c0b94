"""The guest agent on Firecracker — through the hybrid vsock of the Firecracker STAND-IN.

Firecracker cannot run here (no Firecracker binary; no hardware KVM for
ordinary guests), so ``firecracker`` is ``tests/firecracker_standin.py``, which
implements the host side of Firecracker's vsock device from its API description:
it binds the vsock ``uds_path``, reads ``CONNECT <port>``, holds the connection
while the guest is paused, answers ``OK <host port>`` when the "guest" listens on
the port and bridges the stream, and resets connections on ``snapshot/create``.
The "guest"'s agent is the host's real ``qemu-ga`` (``-m unix-listen``, commands
that would act on the host blocked, see ``tests/qga.py``): the JSON protocol, sync
and errors are qemu-ga's own.

Not exercised here: a real Firecracker guest's vsock (the guest kernel's vsock
transport and ``qemu-ga -m vsock-listen`` inside a guest), which needs a KVM host.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.api_models import VMCreateRequest
from banger.daemon.ops import Operations
from banger.daemon.vms import agent_use
from banger.daemon.vms.control import VMControl
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots
from banger.guest.agent import VSOCK_PORT, AgentEndpoint, AgentUnavailable
from banger.store import VMState
from banger.vmm.base import LaunchSpec, VMMError
from banger.vmm.firecracker.driver import FirecrackerDriver
from banger.vmm.firecracker.plan import SnapshotFiles
from tests.firecracker_standin import GUEST_LISTENER_ENV
from tests.firecracker_world import restored_wait_ssh, standin_spec, world
from tests.qga import running_qemu_ga
from tests.standins import standin_binary
from tests.support import needs_root, short_tmpdir


def make_spec(d: Path, agent_socket: Path) -> LaunchSpec:
    return standin_spec(d, vcpus=1, cmdline="console=ttyS0 root=/dev/vda rw panic=-1 reboot=k",
                        agent_socket=agent_socket)  # fmt: skip


@pytest.fixture
def guest_agent() -> Iterator[Path]:
    """The host's qemu-ga on a Unix socket: what the stand-in guest listens with."""
    with short_tmpdir("bgq-") as d, running_qemu_ga(d / "qga.sock", d / "state") as sock:
        yield sock


async def test_the_driver_s_endpoint_reaches_the_agent_across_pause_snapshot_and_restore(
    short_tmp: Path, guest_agent: Path
) -> None:
    env = {GUEST_LISTENER_ENV: f"{VSOCK_PORT}={guest_agent}"}
    driver = FirecrackerDriver(standin_binary(short_tmp, env=env), control_timeout=30)
    uds = short_tmp / "v1.vsock"
    uds.write_text("not a socket")  # a leftover socket is removed; anything else is refused
    with pytest.raises(VMMError, match=r"agent \(vsock\) socket path .* is not a socket"):
        await driver.launch(make_spec(short_tmp, agent_socket=uds))
    uds.unlink()
    proc = await driver.launch(make_spec(short_tmp, agent_socket=uds))
    endpoint = driver.agent_endpoint(uds)
    assert endpoint == AgentEndpoint(uds, VSOCK_PORT)
    try:
        async with await endpoint.connect(timeout=30) as agent:
            await agent.ping()
            assert abs(await agent.get_time() - time.time_ns()) < 10**10
        # Nothing listens on another port in the guest: refused at once, not timed out.
        with pytest.raises(AgentUnavailable, match="connection closed: nothing listens"):
            await AgentEndpoint(uds, 52).connect(timeout=30)

        # A paused guest answers nothing (Firecracker moves no vsock bytes): a timeout.
        await driver.pause(proc)
        with pytest.raises(AgentUnavailable, match="no answer within 1s"):
            await endpoint.connect(timeout=1)
        await driver.resume(proc)

        # An open connection does not survive a snapshot; a new one works after it.
        agent = await endpoint.connect(timeout=30)
        snap = SnapshotFiles(short_tmp / "snap.state", short_tmp / "snap.mem")
        await driver.snapshot(proc, snap)
        with pytest.raises(AgentUnavailable, match=r"connection closed|Connection lost"):
            await agent.ping(timeout=10)
        await agent.close()
        async with await endpoint.connect(timeout=30) as again:
            await again.ping()
    finally:
        await driver.stop(proc, 5)
    # The restore binds the overridden socket; the agent is reached there. A stale
    # socket at that path (a previous run's) is unlinked first.
    uds2 = short_tmp / "v2.vsock"
    restored = await driver.restore(make_spec(short_tmp, agent_socket=uds), snap)
    await driver.stop(restored, 5)
    assert uds.is_socket()
    restored = await driver.restore(make_spec(short_tmp, agent_socket=uds2), snap)
    try:
        async with await driver.agent_endpoint(uds2).connect(timeout=30) as agent:
            await agent.ping()
    finally:
        await driver.stop(restored, 5)


async def events_of(ops: Operations, op: object) -> list[str]:
    op_id = op.id  # type: ignore[attr-defined]
    messages = [event.message async for event in ops.follow(op_id)]
    done = await ops.get(op_id)
    assert done.state == "succeeded", f"{done.kind} failed at {done.stage}: {done.error}"
    return messages


@pytest.mark.root
@pytest.mark.slow
@needs_root
async def test_the_daemon_uses_the_agent_of_a_firecracker_vm_over_vsock(
    guest_agent: Path,
) -> None:
    """VMService + VMControl + Snapshots on a Firecracker VM: readiness, the clock after a
    resume, a snapshot and a restore (through the restored VM's own vsock socket), the
    freeze asked before a snapshot and the poweroff asked before a stop all go
    through the driver's vsock endpoint to the agent (qemu-ga refuses what would act on the
    host: set-time — the clock is then judged by reading it —, freeze, exec)."""
    async with world({GUEST_LISTENER_ENV: f"{VSOCK_PORT}={guest_agent}"}) as w:
        w.pipeline.agent_wait = 120
        messages = await events_of(w.ops, await w.vms.create(
            VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast", start=True)
        ))  # fmt: skip
        vm = w.store.get_vm_by_name("fc1")
        assert vm.vmm == "firecracker" and vm.config.agent_channel is True
        assert vm.config.agent_seen is True
        assert any(m.startswith("guest agent answered") for m in messages)
        assert agent_use.agent_state(vm.config) == "available"
        sock = w.paths.vm_agent_socket(vm.id)
        assert sock.is_socket()
        assert w.pipeline.agent_endpoint(vm) == AgentEndpoint(sock, VSOCK_PORT)
        log = (w.paths.vm_dir(vm.id) / "firecracker.log").read_text()
        assert log.index("PUT /vsock: ok") < log.index("PUT /actions: ok")

        control = VMControl(w.vms)
        await events_of(w.ops, await control.pause("fc1"))
        messages = await events_of(w.ops, await control.resume("fc1"))
        assert any(
            m.startswith("guest clock set from the host's after the resume") for m in messages
        ), messages

        snapshots = Snapshots(w.vms)
        op, _ = await snapshots.create("fc1", "fs1", stop=False)
        messages = await events_of(w.ops, op)
        snap = w.store.resolve_snapshot("fs1")
        assert snap.meta["agent_channel"] is True
        # The freeze was asked through vsock (as on QEMU) and refused by the host's qemu-ga.
        assert any(
            m.startswith("guest filesystems: the freeze failed") and "disabled" in m
            for m in messages
        ), messages
        assert any(m.startswith("guest clock set from the host's after the snapshot")
                   for m in messages), messages  # fmt: skip

        # vm stop: the agent is asked first (guest-exec of the fast init's poweroff, refused
        # here), then SSH (the stand-in world's poweroff), then the driver.
        poweroffs = w.pipeline.poweroffs
        await events_of(w.ops, await w.vms.stop("fc1", timeout=0.2))
        assert w.pipeline.poweroffs == poweroffs + 1
        assert w.store.get_vm(vm.id).state == VMState.STOPPED
        # The socket stays until the next start unlinks it (Firecracker would fail on it).
        await events_of(w.ops, await w.vms.start("fc1"))
        assert w.store.get_vm(vm.id).config.agent_seen is True
        async with await w.pipeline.agent_endpoint(vm).connect(timeout=30) as agent:
            await agent.ping()

        # A restore re-identifies the guest through the restored VM's own vsock socket
        # (vsock_override): the host's qemu-ga refuses guest-exec, so it fails with one
        # error and leaves nothing. A successful one, with a guest that runs the script:
        # tests/integration/test_reident_firecracker_standin.py.
        restored_wait_ssh(w)
        op = await SnapshotRestore(snapshots).restore("fs1", "fc2")
        async for _event in w.ops.follow(op.id):
            pass
        failed = await w.ops.get(op.id)
        assert failed.state == "failed" and failed.stage == "reidentify"
        assert failed.error == "guest agent guest-exec: Command guest-exec has been disabled"
        assert [v.name for v in w.store.list_vms()] == ["fc1"]
        assert [lease.vm_id for lease in w.store.list_leases()] == [vm.id]
        await snapshots.remove("fs1")
