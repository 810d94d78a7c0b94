"""Re-identification of a restored Firecracker guest — against the Firecracker STAND-IN.

Firecracker cannot run here (no binary, no KVM for ordinary guests): the VMM is
``tests/firecracker_standin.py`` (API contract, phase rules, network override,
hybrid vsock), the guest's agent is the host's real ``qemu-ga`` in namespaces
(``tests/namespace_guest.py``) running banger's real re-identification script
on a real ``eth0``. Real: the store, the operations, the root helper in a
network namespace making the taps (detached, then attached), the disks.

NOT exercised: a real Firecracker guest — its kernel's vsock transport, its
virtio-net taking the new MAC, frames on the tap. That needs a KVM host.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from banger.api_models import VMCreateRequest
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots
from banger.guest.agent import VSOCK_PORT
from banger.store import VMState
from tests.firecracker_standin import GUEST_LISTENER_ENV
from tests.firecracker_world import finish, restored_wait_ssh, run_op, tap_link, taps, world
from tests.namespace_guest import SavedIdentity, namespace_guest
from tests.support import alive, needs_root, short_tmpdir

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


async def test_a_restored_firecracker_guest_is_reidentified_before_its_tap_joins_the_bridge(
) -> None:  # fmt: skip
    with short_tmpdir("bgr-") as g:
        sock = g / "agent.sock"
        async with world({GUEST_LISTENER_ENV: f"{VSOCK_PORT}={sock}"}) as w:
            w.pipeline.agent_wait = 120
            restored_wait_ssh(w)
            snapshots = Snapshots(w.vms)
            restores = SnapshotRestore(snapshots)
            net = w.pipeline.config.network
            saved = SavedIdentity(
                address=f"{net.subnet.network_address + 250}/{net.subnet.prefixlen}"
            )

            with namespace_guest(g / "a", sock, saved) as guest:
                await finish(w.ops, await w.vms.create(
                    VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast", start=True)
                ))  # fmt: skip
                fc1 = w.store.get_vm_by_name("fc1")
                assert fc1.config.agent_seen is True
                op, _ = await snapshots.create("fc1", "fs1", stop=False)
                await finish(w.ops, op)
                snap = w.store.resolve_snapshot("fs1")
                assert snap.meta["agent_channel"] is True and snap.vmm == "firecracker"

                # At attach time the tap must still be off the bridge and down, and the
                # guest must already have run the script (its hostname file is the VM's).
                seen: list[tuple[str, dict[str, Any], str]] = []
                attach = w.pipeline.hostnet.attach_tap

                async def recording_attach(name: str) -> None:
                    seen.append((name, tap_link(w.ns, name), guest.file("hostname")))
                    await attach(name)

                w.pipeline.hostnet.attach_tap = recording_attach  # type: ignore[method-assign]

                # fc1 still runs, with the snapshot's address and disks: not refused.
                assert w.store.get_vm(fc1.id).state == VMState.RUNNING
                done, messages = await run_op(w.ops, await restores.restore("fs1", "fc2"))
                assert done.state == "succeeded", f"failed at {done.stage}: {done.error}"
                fc2 = w.store.get_vm_by_name("fc2")
                assert fc2.state == VMState.RUNNING
                assert fc2.ip != fc1.ip and fc2.mac != fc1.mac and fc2.tap != fc1.tap
                assert w.store.get_vm(fc1.id).state == VMState.RUNNING

                assert any(m.endswith(f"tap {fc2.tap} (detached until re-identified)")
                           for m in messages), messages  # fmt: skip
                at_attach = [(name, link.get("master"), "UP" in link["flags"], host)
                             for name, link, host in seen]  # fmt: skip
                assert at_attach == [(fc2.tap, None, False, "fc2\n")]
                # The agent reached through fc2's own vsock socket (vsock_override) also
                # set the clock (refused by this qemu-ga: then judged by reading it).
                assert any(m.startswith("guest clock set from the host's after the restore")
                           for m in messages), messages  # fmt: skip
                assert any(m.startswith(f"guest re-identified as fc2 at {fc2.ip}")
                           and m.endswith(f"tap {fc2.tap} attached to {net.bridge}")
                           for m in messages), messages  # fmt: skip
                link = tap_link(w.ns, fc2.tap or "")
                assert link.get("master") == net.bridge and "UP" in link["flags"]
                assert tap_link(w.ns, fc1.tap or "").get("master") == net.bridge

                # What the guest took on, through the script's positional arguments.
                assert guest.file("hostname") == "fc2\n"
                assert guest.file("resolv.conf") == f"nameserver {net.gateway}\n"
                assert re.fullmatch(r"[0-9a-f]{32}\n", guest.file("machine-id"))
                async with await w.pipeline.agent_endpoint(fc2).connect(timeout=30) as agent:
                    assert await agent.execute("guest-get-host-name") == {"host-name": "fc2"}
                    nics = await agent.execute("guest-network-get-interfaces")
                    (eth0,) = [n for n in nics if n["name"] == "eth0"]
                    assert eth0["hardware-address"] == fc2.mac
                    v4 = [(a["ip-address"], a["prefix"]) for a in eth0["ip-addresses"]
                          if a["ip-address-type"] == "ipv4"]  # fmt: skip
                    assert v4 == [(str(fc2.ip), net.subnet.prefixlen)]
                    route = await agent.run(["ip", "route", "show", "default"], timeout=30)
                    assert route.stdout.decode().split()[:5] == [
                        "default",
                        "via",
                        str(net.gateway),
                        "dev",
                        "eth0",
                    ]
                assert ipaddress.IPv4Address(str(fc2.ip)) in net.subnet

            # A guest whose re-identification fails (no eth0): one error, nothing left.
            with namespace_guest(g / "b", sock, saved, eth0=False):
                before = {
                    "vms": sorted(vm.name for vm in w.store.list_vms()),
                    "taps": sorted(taps(w.ns)),
                    "leases": sorted(str(lease.ip) for lease in w.store.list_leases()),
                    "dirs": sorted(p.name for p in w.paths.vms_dir.iterdir()),
                }
                done, messages = await run_op(w.ops, await restores.restore("fs1", "fc3"))
                assert done.state == "failed" and done.stage == "reidentify"
                assert done.error == (
                    're-identifying the restored guest failed (exit 1): Cannot find device "eth0"'
                )
                after = {
                    "vms": sorted(vm.name for vm in w.store.list_vms()),
                    "taps": sorted(taps(w.ns)),
                    "leases": sorted(str(lease.ip) for lease in w.store.list_leases()),
                    "dirs": sorted(p.name for p in w.paths.vms_dir.iterdir()),
                }
                assert after == before
                (pid,) = [int(m.rsplit("pid ", 1)[1].rstrip(")")) for m in messages
                          if "restored the guest (pid" in m]  # fmt: skip
                assert not alive(pid)  # the undo killed the restored Firecracker
