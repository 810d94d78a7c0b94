"""Which restores re-identify the guest, and which hold its tap off the bridge meanwhile
(issue #18 item 2): pure decisions from the snapshot's row."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

import pytest

from banger.daemon.vms.snapshot_restore import holds_tap_detached, reidentifies
from banger.daemon.vms.vmm_choice import AGENT_CHANNEL_KEY
from banger.store import SnapshotRecord


def snapshot(vmm: str, meta: dict[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        id="s1", name="s", vm_id="v1", vm_name="v", vmm=vmm, image_id="i", kernel_id="k",
        init_mode="fast", vcpus=1, memory_mib=256, work_disk_size=1 << 30,
        ip=IPv4Address("172.30.0.2"), mac="52:54:00:00:00:01", size=0,
        created_at=datetime.now(UTC), meta=meta,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("vmm", "meta", "renamed", "detached"),
    [
        ("qemu", {AGENT_CHANNEL_KEY: True}, True, False),  # QMP set_link holds the link
        ("firecracker", {AGENT_CHANNEL_KEY: True}, True, True),  # a detached tap
        ("firecracker", {AGENT_CHANNEL_KEY: False}, False, False),  # no vsock: old restore
        ("firecracker", {}, False, False),  # a row from before the key
        ("qemu", {}, False, False),
        ("cloud-hypervisor", {AGENT_CHANNEL_KEY: True}, False, False),
        ("firecracker", {AGENT_CHANNEL_KEY: "true"}, False, False),  # only a real True
    ],
)
def test_reidentifies_and_holds_tap_detached(
    vmm: str, meta: dict[str, Any], renamed: bool, detached: bool
) -> None:
    snap = snapshot(vmm, meta)
    assert (reidentifies(snap), holds_tap_detached(snap)) == (renamed, detached)
