"""Who still needs the network (a real store, real VM locks) and how the refusal reads.

The removal itself, with a real guest, helper and daemon, is in
``tests/e2e/test_network_cleanup_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

from banger.daemon.netcleanup import NetworkCleanup, network_users, refusal
from banger.daemon.vms.locks import VMLocks
from banger.store import Store, VMState


def make_vm(store: Store, name: str, state: VMState) -> str:
    return store.create_vm(
        name=name, image_id=None, kernel_id=None, vmm="qemu", init_mode="fast",
        vcpus=1, memory_mib=256, work_disk_size=64 << 20, state=state,
    ).id  # fmt: skip


async def test_every_vm_not_stopped_or_failed_and_every_busy_one_needs_the_network(
    short_tmp: Path,
) -> None:
    with Store.open(short_tmp / "banger.db") as store:
        for state in VMState:
            make_vm(store, f"vm-{state.value}", state)
        starting_from_stopped = make_vm(store, "vm-busy", VMState.STOPPED)
        locks = VMLocks(check_order=False)
        by_state = [
            "vm-creating (creating)",
            "vm-deleting (deleting)",
            "vm-paused (paused)",
            "vm-running (running)",
            "vm-starting (starting)",
            "vm-stopping (stopping)",
        ]
        assert network_users(store.list_vms(), set(locks.held())) == by_state
        # A start between its bridge ensure and its tap: still "stopped", lock held.
        async with locks.hold(starting_from_stopped):
            users = network_users(store.list_vms(), set(locks.held()))
        assert users == ["vm-busy (an operation is running on it)", *by_state]
        assert network_users(store.list_vms(), set(locks.held())) == by_state


def test_no_vm_at_all_needs_nothing(short_tmp: Path) -> None:
    with Store.open(short_tmp / "banger.db") as store:
        make_vm(store, "idle", VMState.STOPPED)
        make_vm(store, "broken", VMState.FAILED)
        assert network_users(store.list_vms(), set()) == []


def test_the_refusal_is_one_line_naming_the_vms() -> None:
    exc = refusal("banger0", ["a (running)", "b (paused)"])
    assert exc.http_status == 409 and exc.exit_code == 4
    assert exc.message == "bridge banger0 is still needed by 2 VM(s): a (running), b (paused)"
    assert exc.hint is not None and "banger vm stop" in exc.hint
    many = refusal("banger0", [f"v{i} (running)" for i in range(8)])
    assert many.message.endswith("v4 (running) and 3 more") and "\n" not in many.message


def test_a_repeated_cleanup_reports_no_change() -> None:
    nothing = {
        "bridge": "banger0",
        "taps_deleted": [],
        "bridge_deleted": False,
        "nat_removed": [],
        "nat_table_deleted": False,
    }
    again = NetworkCleanup.from_helper("banger0", nothing, dns_stopped=False)
    assert again == NetworkCleanup("banger0", bridge_deleted=False, changed=False)
    first = NetworkCleanup.from_helper(
        "banger0",
        {**nothing, "bridge_deleted": True, "nat_removed": ["172.30.0.0/24"]},
        dns_stopped=True,
    )
    assert first.changed and first.nat_removed == ["172.30.0.0/24"]
