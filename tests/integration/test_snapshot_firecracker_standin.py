"""Firecracker snapshots through the real VM service — against the Firecracker STAND-IN.

Firecracker cannot run here (see ``tests/firecracker_standin.py``): the
stand-in validates every request against ``firecracker-api.yaml``, enforces
the phase rules (``snapshot/create`` only while paused, ``snapshot/load`` only
on a fresh process) and, on load, opens every drive path its state file
recorded — which is what makes banger's handling of those paths testable.

Real: the store, the operations, the root helper in a namespace making taps,
the disks, the publication under ``state/snapshots``, the driver's process
supervision. Replaced, as in ``tests.firecracker_world``: the guest-facing
``wait_ssh`` (the stand-in boots nothing), which here checks what the
stand-in loaded instead of logging in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banger.api_models import VMCreateRequest
from banger.daemon.ops import OpHandle
from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.reident import AgentRequired
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import AGENT_SEEN_KEY, Snapshots
from banger.daemon.vms.vmm_choice import AGENT_CHANNEL_KEY
from banger.errors import Conflict
from banger.store import AddressTaken, VMRecord, VMState, new_id
from banger.vmm.base import VMMProcess
from banger.vmm.base import VMState as VMMState
from tests.firecracker_world import World, finish, taps, world
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def use_restore_check(w: World) -> list[str]:
    """``wait_ssh`` for restored VMs: the stand-in loaded the snapshot on the new tap."""
    loaded: list[str] = []
    boot_check = w.pipeline.wait_ssh

    async def wait_ssh(vm: VMRecord, proc: VMMProcess, op: OpHandle) -> None:
        log_path = w.paths.vm_dir(vm.id) / "firecracker.log"
        log = log_path.read_text() if log_path.exists() else ""
        if "snapshot loaded" not in log:
            await boot_check(vm, proc, op)
            return
        await op.stage("wait_ssh")
        assert (await w.vms.pipeline.driver_for(vm).status(proc)).state == VMMState.RUNNING
        line = next(x for x in log.splitlines() if "snapshot loaded; interfaces: " in x)
        ifaces = json.loads(line.split("snapshot loaded; interfaces: ", 1)[1])
        assert ifaces["eth0"]["host_dev_name"] == vm.tap  # the network override
        assert ifaces["eth0"]["guest_mac"] == vm.mac  # the guest's own MAC, kept
        assert "PUT /snapshot/load: ok" in log
        loaded.append(vm.name)

    w.pipeline.wait_ssh = wait_ssh  # type: ignore[method-assign]
    return loaded


async def test_firecracker_snapshot_and_restore_with_the_standin() -> None:
    async with world() as w:
        # VMs without the agent channel: the restore that keeps the snapshot's address.
        # With it, a restore is re-identified: test_reident_firecracker_standin.py.
        w.pipeline.agent_channel = False
        loaded = use_restore_check(w)
        snapshots = Snapshots(w.vms)
        restores = SnapshotRestore(snapshots)
        await finish(w.ops, await w.vms.create(
            VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast", start=True)
        ))  # fmt: skip
        fc1 = w.store.get_vm_by_name("fc1")
        assert fc1.vmm == "firecracker" and fc1.ip is not None

        op, name = await snapshots.create("fc1", "fs1", stop=False)
        assert name == "fs1"
        await finish(w.ops, op)
        snap = w.store.resolve_snapshot("fs1")
        assert snap.meta[AGENT_CHANNEL_KEY] is False  # the old restore: same address
        assert (snap.vmm, snap.ip, snap.mac, snap.vm_name) == (
            "firecracker",
            fc1.ip,
            fc1.mac,
            "fc1",
        )
        assert snap.meta["drive_paths"] == {
            "root": str(w.paths.vm_dir(fc1.id) / "root.ext4"),
            "work": str(w.paths.vm_work_disk(fc1.id)),
        }
        d = files.snapshot_dir(w.paths, snap.id)
        assert {p.name for p in d.iterdir()} == {
            "state", "memory", "root.ext4", "work.ext4",
            "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "snapshot.json",
        }  # fmt: skip
        assert (d / "memory").stat().st_size == fc1.memory_mib << 20
        assert json.loads((d / "snapshot.json").read_text())["name"] == "fs1"
        fc_log = (w.paths.vm_dir(fc1.id) / "firecracker.log").read_text()
        assert fc_log.index("PATCH /vm: ok") < fc_log.index("PUT /snapshot/create: ok")
        proc = w.vms.vmm_process(w.store.get_vm(fc1.id))
        assert proc is not None
        status = await w.vms.pipeline.driver_for(fc1).status(proc)
        assert status.detail == "Running"  # resumed after the disk copies
        assert w.store.get_vm(fc1.id).state == VMState.RUNNING

        # A QEMU snapshot whose source's agent never answered cannot be re-identified:
        # refused before anything is created (issue #18 item 2).
        silent = w.store.create_snapshot(
            id=new_id(), name="qs", vm_id=snap.vm_id, vm_name=snap.vm_name, vmm="qemu",
            image_id=snap.image_id, kernel_id=snap.kernel_id, init_mode=snap.init_mode,
            vcpus=snap.vcpus, memory_mib=snap.memory_mib, work_disk_size=snap.work_disk_size,
            ip=snap.ip, mac=snap.mac, size=0,
            meta={AGENT_CHANNEL_KEY: True, AGENT_SEEN_KEY: False, "root_file": "root.qcow2"},
        )  # fmt: skip
        with pytest.raises(AgentRequired, match="needs qemu-guest-agent running"):
            await restores.restore("qs", "q1")
        assert [vm.name for vm in w.store.list_vms()] == ["fc1"]
        w.store.delete_snapshot(silent.id)

        # fc1 still holds the address: refused before anything is created.
        with pytest.raises(AddressTaken, match="held by VM fc1"):
            await restores.restore("fs1", "fc2")
        await finish(w.ops, await w.vms.delete("fc1"))
        assert not w.paths.vm_dir(fc1.id).exists()

        # Something at a recorded disk path: the load opens it as it is, the drives are
        # re-pointed at the new VM's own files before the guest resumes, and it is never
        # written (where nothing is, a link to the new VM's file is placed: fc3 below).
        w.paths.vm_dir(fc1.id).mkdir()
        (w.paths.vm_dir(fc1.id) / "root.ext4").write_text("not yours")
        await finish(w.ops, await restores.restore("fs1", "fc2"))
        fc2 = w.store.get_vm_by_name("fc2")
        assert fc2.state == VMState.RUNNING and loaded == ["fc2"]
        assert (w.paths.vm_dir(fc1.id) / "root.ext4").read_text() == "not yours"
        (w.paths.vm_dir(fc1.id) / "root.ext4").unlink()
        w.paths.vm_dir(fc1.id).rmdir()
        fc_log = (w.paths.vm_dir(fc2.id) / "firecracker.log").read_text()
        order = ["PUT /snapshot/load: ok", "PATCH /drives/root: ok", "PATCH /drives/work: ok",
                 "PATCH /vm: ok"]  # fmt: skip
        assert [fc_log.index(x) for x in order] == sorted(fc_log.index(x) for x in order)
        assert (fc2.ip, fc2.mac, fc2.vmm) == (snap.ip, snap.mac, "firecracker")
        assert fc2.tap in taps(w.ns)
        assert w.vms.detail(fc2).vmm_reason == "restored from snapshot fs1 (taken on firecracker)"
        assert w.paths.vm_host_key(fc2.id).read_bytes() == (d / "ssh_host_ed25519_key").read_bytes()

        # A snapshot of the restored VM records its own files: the drives were re-pointed.
        op, _ = await snapshots.create("fc2", "fs2", stop=True)
        await finish(w.ops, op)
        assert w.store.resolve_snapshot("fs2").meta["drive_paths"] == {
            "root": str(w.paths.vm_dir(fc2.id) / "root.ext4"),
            "work": str(w.paths.vm_work_disk(fc2.id)),
        }
        assert w.store.get_vm(fc2.id).state == VMState.PAUSED  # --stop
        with pytest.raises(Conflict, match="is held by VM fc2"):
            await restores.restore("fs2", "fc3")
        await finish(w.ops, await w.vms.delete("fc2"))
        await finish(w.ops, await restores.restore("fs2", "fc3"))
        assert loaded == ["fc2", "fc3"]
        assert not w.paths.vm_dir(fc2.id).exists()  # the links and their directory are gone

        assert [s["name"] for s in await snapshots.listing()] == ["fs1", "fs2"]
        assert [s["name"] for s in await snapshots.listing("fc1")] == ["fs1"]  # gone VM
        await snapshots.remove("fs1")
        await snapshots.remove("fs2")
        assert await snapshots.listing() == []
        assert list(files.snapshots_dir(w.paths).iterdir()) == []
        fc3 = w.store.get_vm_by_name("fc3")
        assert fc3.state == VMState.RUNNING  # its memory file was mapped; removal is fine
        assert Path(f"/proc/{fc3.pid}").exists()
