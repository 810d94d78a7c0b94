"""The pools table (schema v6) and the one transaction a take is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.errors import Conflict, NotFound
from banger.store import PoolRecord, Store, VMRecord, VMState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "banger.db") as opened:
        yield opened


def make_pool(store: Store, name: str = "agents", size: int = 2) -> PoolRecord:
    return store.create_pool(
        name=name,
        image=None,
        kernel=None,
        init_mode="fast",
        vcpus=1,
        memory_mib=256,
        work_disk_size=1 << 30,
        size=size,
    )


def member(store: Store, name: str, pool: str | None, state: VMState) -> VMRecord:
    return store.create_vm(
        name=name,
        image_id=None,
        kernel_id=None,
        vmm="qemu",
        init_mode="fast",
        vcpus=1,
        memory_mib=256,
        work_disk_size=1 << 30,
        state=state,
        pool=pool,
    )


def test_a_pool_round_trips_and_its_name_is_unique(store: Store) -> None:
    made = make_pool(store)
    assert store.get_pool("agents") == made
    assert made.image is None and made.template_id is None and made.size == 2
    with pytest.raises(Conflict, match="name: a pool named 'agents' already exists"):
        make_pool(store)
    changed = store.update_pool(made.id, size=4, template_key="k1", error="boom")
    assert (changed.size, changed.template_key, changed.error) == (4, "k1", "boom")
    assert [p.name for p in store.list_pools()] == ["agents"]
    with pytest.raises(TypeError, match="cannot change"):
        store.update_pool(made.id, name="other")  # type: ignore[call-arg]
    with pytest.raises(NotFound, match="no pool named 'nope'"):
        store.get_pool("nope")


def test_members_are_the_vms_naming_the_pool(store: Store) -> None:
    make_pool(store)
    make_pool(store, "other")
    a = member(store, "agents-pool-a", "agents", VMState.RUNNING)
    member(store, "other-pool-b", "other", VMState.RUNNING)
    member(store, "mine", None, VMState.RUNNING)
    assert [vm.id for vm in store.pool_members("agents")] == [a.id]
    assert store.get_vm(a.id).pool == "agents"


def test_a_take_renames_and_releases_the_guest_exactly_once(store: Store) -> None:
    make_pool(store)
    ready = member(store, "agents-pool-a", "agents", VMState.RUNNING)
    taken = store.take_member(ready.id, "agents", "t1")
    assert (taken.id, taken.name, taken.pool) == (ready.id, "t1", None)
    assert store.pool_members("agents") == []
    # A second take of the same guest (a racing request) finds it gone.
    with pytest.raises(NotFound, match="no longer ready"):
        store.take_member(ready.id, "agents", "t2")


def test_a_take_refuses_a_guest_that_is_not_ready_or_a_taken_name(store: Store) -> None:
    make_pool(store)
    starting = member(store, "agents-pool-a", "agents", VMState.STARTING)
    with pytest.raises(NotFound):
        store.take_member(starting.id, "agents", "t1")
    ready = member(store, "agents-pool-b", "agents", VMState.RUNNING)
    member(store, "t1", None, VMState.RUNNING)
    with pytest.raises(Conflict, match="name: a VM named 't1' already exists"):
        store.take_member(ready.id, "agents", "t1")
    # Nothing changed: the guest is still the pool's, under its own name.
    again = store.get_vm(ready.id)
    assert (again.name, again.pool) == ("agents-pool-b", "agents")


def test_deleting_a_pool_releases_rows_still_naming_it(store: Store) -> None:
    pool = make_pool(store)
    left = member(store, "agents-pool-a", "agents", VMState.STOPPED)
    store.delete_pool(pool.id)
    assert store.list_pools() == []
    assert store.get_vm(left.id).pool is None
