"""A VM row's ``config`` column as a typed record: exact JSON round trip, every
shape older bangers wrote still loads, unknown and odd keys kept verbatim."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from banger.store import Store
from banger.store.vm_config import CarriedDrivePaths, Launched, VMConfig

_text = st.text(max_size=20)
_ints = st.integers(min_value=0, max_value=2**40)
_json_leaf = st.none() | st.booleans() | _ints | _text
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_known = {
    "vmm_reason",
    "restored_from",
    "root_disk",
    "root_format",
    "vmm_process",
    "accelerator",
    "cmdline",
    "pvh_boot",
    "agent_channel",
    "agent_seen",
    "launched",
    "boot_timeline",
    "firecracker_drive_paths",
}

configs = st.builds(
    VMConfig,
    vmm_reason=st.none() | _text,
    restored_from=st.none() | _text,
    root_disk=st.none() | _text,
    root_format=st.none() | st.sampled_from(["raw", "qcow2"]),
    vmm_process=st.none() | st.dictionaries(_text, _json, max_size=4),
    accelerator=st.none() | st.sampled_from(["kvm", "tcg"]),
    cmdline=st.none() | _text,
    pvh_boot=st.none() | st.booleans(),
    agent_channel=st.none() | st.booleans(),
    agent_seen=st.none() | st.booleans(),
    launched=st.none() | st.builds(Launched, _ints, _ints),
    boot_timeline=st.none()
    | st.lists(st.dictionaries(_text, _json, max_size=3), max_size=3).map(tuple),
    firecracker_drive_paths=st.none()
    | st.builds(CarriedDrivePaths, _ints, _ints, st.dictionaries(_text, _text, max_size=3)),
    extra=st.dictionaries(_text.filter(lambda k: k not in _known), _json, max_size=3),
)


@given(configs)
def test_round_trip_through_json_text(config: VMConfig) -> None:
    stored = json.loads(json.dumps(config.to_json()))
    assert VMConfig.from_json(stored) == config
    assert VMConfig.from_json(stored).to_json() == stored


@given(st.dictionaries(_text, _json, max_size=6))
def test_any_json_object_loads_and_is_written_back_unchanged(data: dict[str, Any]) -> None:
    assert VMConfig.from_json(data).to_json() == data


#: Rows as older bangers left them, oldest first.
OLD_ROWS: list[dict[str, Any]] = [
    {},  # created, never started
    {"vmm_reason": "config vmm = 'qemu'", "root_disk": "/s/vms/a/root.qcow2"},
    {  # started before PVH boots, the agent channel and `launched`
        "vmm_reason": "auto: no KVM",
        "root_disk": "/s/vms/a/root.ext4",
        "root_format": "raw",
        "accelerator": "tcg",
        "cmdline": "console=ttyS0 root=/dev/vda",
        "vmm_process": {"driver": "qemu", "vm_id": "a", "pid": 7, "start_time": 9},
    },
    {  # today's launch, with a boot timeline and an agent answer
        "vmm_reason": "auto",
        "root_disk": "/dev/mapper/banger-a",
        "root_format": "raw",
        "accelerator": "kvm",
        "cmdline": "x",
        "pvh_boot": True,
        "agent_channel": True,
        "agent_seen": False,
        "launched": {"vcpus": 2, "memory_mib": 1024},
        "boot_timeline": [{"phase": "kernel", "label": "k", "seconds": 1.5, "kernel": None}],
        "vmm_process": {"driver": "qemu", "vm_id": "a", "pid": 7, "start_time": 9},
    },
    {  # restored on Firecracker
        "vmm_reason": "restored from snapshot s (taken on firecracker)",
        "restored_from": "abc",
        "firecracker_drive_paths": {"pid": 3, "start_time": 4, "paths": {"root": "/r"}},
    },
]


def test_old_shapes_load_with_absent_keys_as_none() -> None:
    first_start = VMConfig.from_json(OLD_ROWS[2])
    assert first_start.accelerator == "tcg" and first_start.root_format == "raw"
    assert first_start.pvh_boot is None and first_start.agent_channel is None
    assert first_start.launched is None and first_start.extra == {}
    today = VMConfig.from_json(OLD_ROWS[3])
    assert today.launched == Launched(2, 1024) and today.pvh_boot is True
    assert today.boot_timeline is not None and today.boot_timeline[0]["seconds"] == 1.5
    restored = VMConfig.from_json(OLD_ROWS[4])
    assert restored.firecracker_drive_paths == CarriedDrivePaths(3, 4, {"root": "/r"})
    for row in OLD_ROWS:
        assert VMConfig.from_json(row).to_json() == row


def test_unknown_keys_and_odd_values_are_kept_not_read() -> None:
    odd = {"launched": {"vcpus": True, "memory_mib": 1}, "pvh_boot": "yes", "ssh": True}
    config = VMConfig.from_json(odd)
    assert config.launched is None and config.pvh_boot is None
    assert config.extra == odd and config.to_json() == odd


def test_a_row_written_by_an_older_banger_loads_from_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state" / "banger.db"
    with Store.open(db) as store:
        vm = store.create_vm(
            name="old",
            image_id=None,
            kernel_id=None,
            vmm="qemu",
            init_mode="fast",
            vcpus=1,
            memory_mib=512,
            work_disk_size=1 << 30,
        )
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE vms SET config = ? WHERE id = ?", (json.dumps(OLD_ROWS[2]), vm.id))
    conn.close()
    with Store.open(db) as store:
        loaded = store.get_vm(vm.id)
        assert loaded.config == VMConfig.from_json(OLD_ROWS[2])
        changed = store.update_vm(vm.id, config=loaded.config)
        assert changed.config.to_json() == OLD_ROWS[2]
