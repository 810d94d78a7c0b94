"""Schema v5: snapshot rows, the exact-address lease a restore claims, and what they protect."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from banger.errors import Conflict, NotFound
from banger.store import MIGRATIONS, AddressTaken, Store, migrate

SUBNET = IPv4Network("172.30.0.0/24")


def snapshot_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "snap-1",
        "vm_id": "gone-vm-id",
        "vm_name": "alpha",
        "vmm": "qemu",
        "image_id": "i1",
        "kernel_id": "k1",
        "init_mode": "fast",
        "vcpus": 1,
        "memory_mib": 256,
        "work_disk_size": 64 << 20,
        "ip": IPv4Address("172.30.0.2"),
        "mac": "02:11:22:33:44:55",
        "size": 1234,
        "meta": {"root_file": "root.qcow2"},
    }
    return {**fields, **overrides}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "b.db")
    s.create_image(id="i1", name="deb", source="local:/x")
    s.create_kernel(id="k1", name="k", source="local:/k")
    return s


def test_create_resolve_list_delete(store: Store) -> None:
    snap = store.create_snapshot(**snapshot_fields())
    assert snap.ip == IPv4Address("172.30.0.2") and snap.meta == {"root_file": "root.qcow2"}
    assert store.resolve_snapshot("snap-1") == snap == store.resolve_snapshot(snap.id)
    other = store.create_snapshot(**snapshot_fields(name="snap-2", vm_id="another"))
    assert [s.name for s in store.list_snapshots()] == ["snap-1", "snap-2"]
    assert store.list_snapshots(vm_id="another") == [other]
    store.delete_snapshot(snap.id)
    with pytest.raises(NotFound, match="no snapshot named 'snap-1'"):
        store.resolve_snapshot("snap-1")
    with pytest.raises(NotFound):
        store.delete_snapshot(snap.id)


def test_names_are_unique(store: Store) -> None:
    store.create_snapshot(**snapshot_fields())
    with pytest.raises(Conflict, match="a snapshot named 'snap-1' already exists"):
        store.create_snapshot(**snapshot_fields(vm_id="x"))


def test_image_and_kernel_cannot_go_while_a_snapshot_needs_them(store: Store) -> None:
    store.create_snapshot(**snapshot_fields())
    with pytest.raises(Conflict, match="used by snapshots: snap-1"):
        store.delete_image("i1")
    with pytest.raises(Conflict, match="used by snapshots: snap-1"):
        store.delete_kernel("k1")
    store.delete_snapshot(store.resolve_snapshot("snap-1").id)
    store.delete_image("i1")


def vm(store: Store, name: str) -> str:
    return store.create_vm(
        name=name, image_id="i1", kernel_id="k1", vmm="qemu", init_mode="fast",
        vcpus=1, memory_mib=256, work_disk_size=64 << 20,
    ).id  # fmt: skip


def test_claim_ip_takes_exactly_that_address_or_names_the_holder(store: Store) -> None:
    a = vm(store, "alpha")
    assert store.allocate_ip(a, SUBNET) == IPv4Address("172.30.0.2")
    b = vm(store, "beta")
    with pytest.raises(AddressTaken, match=r"address 172\.30\.0\.2 is held by VM alpha") as err:
        store.claim_ip(b, IPv4Address("172.30.0.2"))
    assert err.value.hint is not None and "banger vm rm alpha" in err.value.hint
    assert store.get_vm(b).ip is None and store.ip_holder(IPv4Address("172.30.0.2")) == "alpha"

    store.delete_vm(a)  # the lease goes with the row
    assert store.claim_ip(b, IPv4Address("172.30.0.2")) == IPv4Address("172.30.0.2")
    assert store.get_vm(b).ip == IPv4Address("172.30.0.2")
    assert store.claim_ip(b, IPv4Address("172.30.0.2")) == IPv4Address("172.30.0.2")  # again
    # allocate_ip keeps a claimed address: the start pipeline's network stage reuses it.
    assert store.allocate_ip(b, SUBNET) == IPv4Address("172.30.0.2")
    with pytest.raises(NotFound):
        store.claim_ip("no-such-vm", IPv4Address("172.30.0.9"))


def test_restore_rows_are_one_transaction(store: Store) -> None:
    """A failed claim inside ``store.transaction()`` takes the new VM row with it."""
    a = vm(store, "alpha")
    store.allocate_ip(a, SUBNET)
    with pytest.raises(AddressTaken), store.transaction():
        b = vm(store, "beta")
        store.claim_ip(b, IPv4Address("172.30.0.2"))
    assert [v.name for v in store.list_vms()] == ["alpha"]


def test_v4_database_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:4]) == 4
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version >= 5
        assert store.list_snapshots() == []
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):  # the vmm CHECK holds
        conn.execute(
            "INSERT INTO snapshots (id, name, vm_id, vm_name, vmm, init_mode, vcpus,"
            " memory_mib, work_disk_size, ip, mac, created_at)"
            " VALUES ('s', 'n', 'v', 'v', 'xen', 'fast', 1, 1, 1, 'ip', 'mac', 'now')"
        )
    conn.close()
