"""The debug check of lock rule 2 (docs/ARCHITECTURE.md, "Locks and their order")."""

from __future__ import annotations

import asyncio

import pytest

from banger.daemon.vms.lock_order import LockOrderViolation, held_vm_lock
from banger.daemon.vms.locks import VMLocks


async def test_one_lock_at_a_time_passes_and_is_tracked() -> None:
    locks = VMLocks(check_order=True)
    async with locks.hold("a"):
        assert held_vm_lock() == "a"
    async with locks.hold("b"):
        assert held_vm_lock() == "b"
    assert held_vm_lock() is None
    assert locks.order is not None and locks.order.checked == 2 and not locks.order.violations


async def test_a_second_vm_lock_while_holding_one_is_refused() -> None:
    locks = VMLocks(check_order=True)
    async with locks.hold("a"):
        with pytest.raises(LockOrderViolation, match="requested while holding VM lock a"):
            async with locks.hold("b"):
                pass
    assert locks.order is not None and len(locks.order.violations) == 1


async def test_the_same_lock_again_is_refused_instead_of_hanging() -> None:
    locks = VMLocks(check_order=True)
    async with locks.hold("a"):
        with pytest.raises(LockOrderViolation, match="requested again"):
            async with asyncio.timeout(1):
                async with locks.hold("a"):
                    pass


async def test_a_child_task_inherits_what_its_parent_holds() -> None:
    locks = VMLocks(check_order=True)

    async def child() -> None:
        async with locks.hold("b"):
            pass

    async with locks.hold("a"):
        with pytest.raises(LockOrderViolation):
            await asyncio.create_task(child())


async def test_parallel_tasks_on_different_vms_are_fine() -> None:
    locks = VMLocks(check_order=True)

    async def work(vm: str) -> None:
        async with locks.hold(vm):
            await asyncio.sleep(0.01)

    await asyncio.gather(*(work(v) for v in "abcdabcd"))
    assert locks.order is not None and locks.order.violations == []


async def test_off_by_default() -> None:
    locks = VMLocks(check_order=False)
    assert locks.order is None
    async with locks.hold("a"), locks.hold("b"):  # not checked: production pays nothing
        pass
