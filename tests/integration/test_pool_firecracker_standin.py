"""Pools on Firecracker — against the Firecracker STAND-IN (issue #18 item 4).

Firecracker cannot run here (no binary, no KVM for ordinary guests): the VMM is
``tests/firecracker_standin.py``; each VM's "guest" is its own real ``qemu-ga``
in namespaces (``tests/namespace_guest.py``), reached through the VM's own
vsock socket via ``tests/guest_router.py`` (handed out in the order the VMs
first call their agent: the template guest first, then each restore). Real:
the store, the operations, the pool's filler (template boot, ``snapshot/create``,
restores re-identified on detached taps), the take, the root helper in a
network namespace, the disks.

NOT exercised: a real Firecracker guest (a real memory restore — the stand-in
restores none —, its vsock transport and virtio-net), and the take's SSH steps
(file_sync is skipped when unchanged since the template; no workspace asked):
the stand-in boots no sshd.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.api_models import PoolInfo, PoolSetRequest, VMCreateRequest
from banger.daemon.pools.service import Pools
from banger.daemon.vms.snapshots import Snapshots
from banger.store import VMState
from tests.firecracker_world import agent_world, finish, run_op, tap_link
from tests.guest_router import guest_router
from tests.integration.test_fork_firecracker_standin import guests_for, state
from tests.support import async_wait_until, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def ready_info(pools: Pools, besides: str | None = None) -> PoolInfo | None:
    """Pool p's info once ready (with a guest other than ``besides``), else None."""
    info = pools.info(pools.store.get_pool("p"))
    if info.state != "ready" or (besides is not None and info.ready == [besides]):
        return None
    return info


async def test_a_firecracker_pool_of_one_fills_and_a_take_yields_a_vm() -> None:
    async with agent_world("bgp-") as (g, listener, w, saved):
        net = w.pipeline.config.network
        pools = Pools(Snapshots(w.vms))
        with guests_for(g, {"template": True, "refill": True}, saved) as guests:
            order = [guests["template"], guests["refill"]]
            given: dict[str, Path] = {}

            def route(vm_id: str) -> Path | None:
                if vm_id not in given and order:
                    given[vm_id] = order.pop(0).socket
                return given.get(vm_id)

            async with guest_router(listener, route):
                try:
                    info = await pools.set(
                        "p", PoolSetRequest(image="deb", kernel="deb", size=1, init="fast")
                    )
                    assert info.state == "filling"
                    ready = await async_wait_until(
                        lambda: ready_info(pools),
                        300,
                        "pool p ready",
                    )
                    assert ready is not None and ready.template is not None
                    assert ready.template.startswith("pool.p.")
                    (member,) = ready.ready
                    template = w.store.resolve_snapshot(ready.template)
                    assert template.vmm == "firecracker"
                    assert template.meta["agent_channel"] is True

                    # The take: the ready guest becomes "mine", renamed through its agent.
                    op = await pools.create(VMCreateRequest(name="mine", pool="p"))
                    done, messages = await run_op(w.ops, op)
                    assert done.state == "succeeded", f"failed at {done.stage}: {done.error}"
                    assert any(m.endswith(f"guest {member} of pool p") for m in messages)
                    assert any(m.startswith("guest hostname mine (through the guest agent)")
                               for m in messages), messages  # fmt: skip
                    mine = w.store.get_vm_by_name("mine")
                    assert mine.state == VMState.RUNNING and mine.pool is None
                    assert mine.vmm == "firecracker"
                    assert guests["template"].file("hostname") == "mine\n"

                    # The refill: a restore of the template, re-identified on a
                    # detached tap through its own guest, then attached.
                    refilled = await async_wait_until(
                        lambda: ready_info(pools, besides=member),
                        300,
                        "pool p refilled",
                    )
                    assert refilled is not None
                    (fresh,) = refilled.ready
                    guest = w.store.get_vm_by_name(fresh)
                    assert guest.config.restored_from == template.id
                    assert guest.ip != mine.ip and guest.mac != mine.mac
                    assert guests["refill"].file("hostname") == f"{fresh}\n"
                    link = tap_link(w.ns, guest.tap or "")
                    assert link.get("master") == net.bridge and "UP" in link["flags"]
                    async with await w.pipeline.agent_endpoint(guest).connect(timeout=30) as agent:
                        nics = await agent.execute("guest-network-get-interfaces")
                        (eth0,) = [n for n in nics if n["name"] == "eth0"]
                        assert eth0["hardware-address"] == guest.mac

                    # pool rm: its guest and template go; the taken VM stays.
                    await finish(w.ops, await pools.remove("p"))
                    after = state(w)
                    assert after["vms"] == ["mine"] and after["snapshots"] == []
                finally:
                    await pools.close()
