"""Per-VM workspace locks: transfers queue among themselves; stop/rm cancel them (item 18)."""

from __future__ import annotations

import asyncio

from banger.daemon.vms.transfers import Transfers


async def test_transfers_of_one_vm_run_one_after_the_other() -> None:
    transfers = Transfers()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def transfer(name: str, gate: asyncio.Event | None, vm: str = "vm1") -> None:
        async with transfers.hold(vm):
            order.append(f"{name} in")
            if gate is not None:
                first_in.set()
                await gate.wait()
            order.append(f"{name} out")

    one = asyncio.create_task(transfer("one", release))
    await first_in.wait()
    two = asyncio.create_task(transfer("two", None))
    await asyncio.create_task(transfer("other-vm", None, "vm2"))  # another VM's: not queued
    await asyncio.sleep(0)
    assert transfers.running("vm1") == 2
    release.set()
    await asyncio.gather(one, two)
    assert order.index("one out") < order.index("two in")
    assert transfers.running("vm1") == 0


async def test_cancel_ends_the_running_and_the_queued_transfer() -> None:
    transfers = Transfers()
    inside = asyncio.Event()
    unwound: list[str] = []

    async def transfer(name: str) -> None:
        try:
            async with transfers.hold("vm1"):
                inside.set()
                await asyncio.Event().wait()  # a transfer that would never end
        except asyncio.CancelledError:
            unwound.append(name)
            raise

    running = asyncio.create_task(transfer("running"))
    await inside.wait()
    queued = asyncio.create_task(transfer("queued"))
    await asyncio.sleep(0)
    assert await transfers.cancel("vm1", "VM vm1 is being removed") == 2
    assert running.cancelled() and queued.cancelled()
    assert sorted(unwound) == ["queued", "running"]
    assert transfers.running("vm1") == 0
    assert await transfers.cancel("vm1", "again") == 0
    transfers.forget("vm1")
    async with transfers.hold("vm1"):  # usable again (a new VM of that id)
        pass
