"""``vm fork`` of a Firecracker VM — against the Firecracker STAND-IN (issue #18 item 3).

Firecracker cannot run here (no binary, no KVM for ordinary guests): the VMM is
``tests/firecracker_standin.py`` (API contract, phase rules, ``snapshot/create``
only while paused, ``snapshot/load`` with network and vsock overrides, drive
re-pointing). Each VM's "guest" is its own real ``qemu-ga`` in namespaces
(``tests/namespace_guest.py``), reached through that VM's own vsock socket: the
stand-ins' one guest listener is a router (``tests/guest_router.py``) that
joins each stand-in's connection to the guest named for its VM, so every child
runs banger's real re-identification script on a real ``eth0`` of its own.
Real: the store, the operations, the fork's stages and undo, the root helper
in a network namespace making the taps (detached, then attached), the disks.

NOT exercised: a real Firecracker guest — a real memory restore (the stand-in
restores no memory: the "guest" is the same process before and after),
its kernel's vsock transport, its virtio-net taking the new MAC. That needs a
KVM host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from banger.api_models import VMCreateRequest
from banger.daemon.vms.fork import INTERNAL_PREFIX, REFLINK, SPARSE, Fork
from banger.daemon.vms.snapshots import Snapshots
from banger.store import Store, VMState
from tests.firecracker_world import World, agent_world, finish, run_op, tap_link, taps
from tests.guest_router import guest_router
from tests.namespace_guest import NamespaceGuest, SavedIdentity, namespace_guest
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

CHILDREN = ("fc1-fork-1", "fc1-fork-2")


def by_name(store: Store, guests: dict[str, NamespaceGuest]) -> Any:
    """``route`` for :func:`guest_router`: the guest named like the VM (None: no guest)."""

    def route(vm_id: str) -> Path | None:
        try:
            name = store.get_vm(vm_id).name
        except Exception:
            return None
        guest = guests.get(name)
        return guest.socket if guest is not None else None

    return route


@contextmanager
def guests_for(
    g: Path, names: dict[str, bool], saved: SavedIdentity
) -> Iterator[dict[str, NamespaceGuest]]:
    """A namespace guest per name (value False: one without eth0, whose re-identification
    fails)."""
    with ExitStack() as stack:
        out: dict[str, NamespaceGuest] = {}
        g.chmod(0o755)  # each guest (nobody) makes its socket in a directory below
        for k, (name, eth0) in enumerate(names.items()):
            (g / f"s{k}").mkdir()
            out[name] = stack.enter_context(
                namespace_guest(g / f"g{k}", g / f"s{k}" / "agent.sock", saved, eth0=eth0)
            )
        yield out


def state(w: World) -> dict[str, list[str]]:
    snapshots = w.paths.state_dir / "snapshots"
    return {
        "vms": sorted(vm.name for vm in w.store.list_vms()),
        "taps": sorted(taps(w.ns)),
        "leases": sorted(str(lease.ip) for lease in w.store.list_leases()),
        "dirs": sorted(p.name for p in w.paths.vms_dir.iterdir()),
        "snapshots": sorted(s.name for s in w.store.list_snapshots()),
        "snapshot_dirs": sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else [],
    }


def standins(w: World) -> list[int]:
    """Pids of the stand-ins this world started (their API sockets are in its runtime dir)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--api-sock" in argv and str(w.paths.runtime_dir).encode() in b" ".join(argv):
            found.append(int(d.name))
    return sorted(found)


async def source_running(w: World, name: str) -> bool:
    vm = w.store.get_vm_by_name(name)
    proc = w.vms.vmm_process(vm)
    assert proc is not None
    status = await w.pipeline.driver_for(vm).status(proc)
    return vm.state == VMState.RUNNING and status.detail == "Running"


async def test_fork_of_a_firecracker_vm_gives_children_of_their_own_and_resumes_the_source(
) -> None:  # fmt: skip
    async with agent_world("bgk-") as (g, listener, w, saved):
        net = w.pipeline.config.network
        fork = Fork(Snapshots(w.vms))
        names = {"fc1": True, **dict.fromkeys(CHILDREN, True), "gc-1": True}
        with guests_for(g, names, saved) as guests:
            async with guest_router(listener, by_name(w.store, guests)) as routed:
                await finish(w.ops, await w.vms.create(
                    VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast",
                                    start=True)
                ))  # fmt: skip
                fc1 = w.store.get_vm_by_name("fc1")
                assert fc1.config.agent_seen is True and fc1.vmm == "firecracker"

                # At attach time each tap must be off the bridge and down, and its own
                # guest must already have run the script with its child's values.
                seen: list[tuple[str, Any, bool, str]] = []
                attach = w.pipeline.hostnet.attach_tap

                async def recording_attach(name: str) -> None:
                    (vm,) = [v for v in w.store.list_vms() if v.tap == name]
                    link = tap_link(w.ns, name)
                    seen.append((vm.name, link.get("master"), "UP" in link["flags"],
                                 guests[vm.name].file("hostname")))  # fmt: skip
                    await attach(name)

                w.pipeline.hostnet.attach_tap = recording_attach  # type: ignore[method-assign]

                op, plan = await fork.start("fc1", 2, None)
                assert plan.children == list(CHILDREN)
                assert plan.disk_copies in (REFLINK, SPARSE)
                done, messages = await run_op(w.ops, op)
                assert done.state == "succeeded", f"failed at {done.stage}: {done.error}"
                said = f"forked fc1 into {', '.join(CHILDREN)} (disks by {plan.disk_copies})"
                assert said in messages, messages
                # Firecracker's raw root is copied per child, like the work disk.
                assert any(m.endswith(f"(roots: by {plan.disk_copies}; work disks by "
                                      f"{plan.disk_copies})") for m in messages)  # fmt: skip

                # The source was paused for the snapshot and runs again.
                assert await source_running(w, "fc1")
                log = (w.paths.vm_dir(fc1.id) / "firecracker.log").read_text()
                assert log.index("PUT /snapshot/create: ok") < log.rindex("PATCH /vm: ok")
                assert log.count("PUT /snapshot/create: ok") == 1  # saved once

                kids = [w.store.get_vm_by_name(n) for n in CHILDREN]
                assert all(k.state == VMState.RUNNING for k in kids)
                assert len({fc1.ip, *(k.ip for k in kids)}) == 3
                assert len({fc1.mac, *(k.mac for k in kids)}) == 3
                assert len({fc1.tap, *(k.tap for k in kids)}) == 3
                assert sorted(seen) == [(n, None, False, f"{n}\n") for n in CHILDREN]
                for kid in kids:
                    guest = guests[kid.name]
                    assert guest.file("hostname") == f"{kid.name}\n"
                    link = tap_link(w.ns, kid.tap or "")
                    assert link.get("master") == net.bridge and "UP" in link["flags"]
                    # Through the child's own vsock socket, to its own guest.
                    async with await w.pipeline.agent_endpoint(kid).connect(timeout=30) as agent:
                        assert await agent.execute("guest-get-host-name") == {"host-name": kid.name}
                        nics = await agent.execute("guest-network-get-interfaces")
                        (eth0,) = [n for n in nics if n["name"] == "eth0"]
                        assert eth0["hardware-address"] == kid.mac
                        assert [a["ip-address"] for a in eth0["ip-addresses"]
                                if a["ip-address-type"] == "ipv4"] == [str(kid.ip)]  # fmt: skip
                    # Loaded onto its own tap, then each drive re-pointed at its own
                    # copies (the source's files were only opened by the load).
                    klog = (w.paths.vm_dir(kid.id) / "firecracker.log").read_text()
                    line = next(x for x in klog.splitlines()
                                if "snapshot loaded; interfaces: " in x)  # fmt: skip
                    ifaces = json.loads(line.split("snapshot loaded; interfaces: ", 1)[1])
                    assert ifaces["eth0"]["host_dev_name"] == kid.tap
                    assert "PATCH /drives/root: ok" in klog
                    assert "PATCH /drives/work: ok" in klog
                    assert (w.paths.vm_dir(kid.id) / "work.ext4").exists()
                # The source's own guest was never re-identified.
                assert guests["fc1"].file("hostname") == "old\n"
                assert {vm_id for vm_id, _ in routed} >= {fc1.id, *(k.id for k in kids)}
                # The internal snapshot is gone (each child has its own disk copies).
                assert not [s for s in w.store.list_snapshots()
                            if s.name.startswith(INTERNAL_PREFIX)]  # fmt: skip

                # A fork of a fork: the child's Firecracker state names its own files
                # (its drives were re-pointed), so its snapshot carries no paths of fc1.
                kid = kids[0]
                assert kid.config.firecracker_drive_paths is None
                op, _plan = await fork.start(kid.name, 1, "gc")
                done, _messages = await run_op(w.ops, op)
                assert done.state == "succeeded", f"failed at {done.stage}: {done.error}"
                gc = w.store.get_vm_by_name("gc-1")
                assert gc.state == VMState.RUNNING and gc.ip not in {fc1.ip, kid.ip}
                assert guests["gc-1"].file("hostname") == "gc-1\n"
                assert await source_running(w, kid.name)
                assert await source_running(w, "fc1")


async def test_a_failed_child_reidentification_removes_every_child_and_the_source_runs_on(
) -> None:  # fmt: skip
    async with agent_world("bgk-") as (g, listener, w, saved):
        fork = Fork(Snapshots(w.vms))
        # The second child's guest has no eth0: its re-identification script fails.
        names = {"fc1": True, CHILDREN[0]: True, CHILDREN[1]: False}
        with guests_for(g, names, saved) as guests:
            async with guest_router(listener, by_name(w.store, guests)):
                await finish(w.ops, await w.vms.create(
                    VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast",
                                    start=True)
                ))  # fmt: skip
                before = state(w)
                op, _plan = await fork.start("fc1", 2, None)
                done, _messages = await run_op(w.ops, op)
                assert done.state == "failed"
                assert done.error == (
                    're-identifying the restored guest failed (exit 1): Cannot find device "eth0"'
                )
                # No child, tap, lease, VM directory or internal snapshot is left.
                assert state(w) == before
                assert await source_running(w, "fc1")
                assert guests["fc1"].file("hostname") == "old\n"
                # Every child's Firecracker ended (its undo, or the removal of a made
                # child): the source's is the only stand-in left of this world.
                assert standins(w) == [w.store.get_vm_by_name("fc1").pid]
