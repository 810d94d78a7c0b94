"""The ``stray taps`` doctor check: a real store (read-only), a sysfs tree in the kernel's layout.

The real tap left by a helper killed inside ``open_tap`` is in
tests/reliability/test_faults.py; here every shape of record is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from banger.doctor.checks import CHECKS, gather_context
from banger.doctor.taps import accounted_for, check_stray_taps, read_vms
from banger.net.taps import tap_name
from banger.paths import Paths
from banger.store import Store, VMState

BRIDGE = "banger0"  # the configured default: this test home has no config file


def _vm(store: Store, name: str) -> str:
    return store.create_vm(
        name=name, image_id=None, kernel_id=None, vmm="qemu", init_mode="fast",
        vcpus=1, memory_mib=256, work_disk_size=64 << 20,
    ).id  # fmt: skip


def _sysfs(root: Path, *taps: str) -> Path:
    """``taps`` on our bridge, plus an interface and another user's tap that are never ours."""
    net = root / "net"
    (net / BRIDGE / "brif").mkdir(parents=True)
    for name in taps:
        (net / name).mkdir()
        (net / name / "owner").write_text(f"{os.getuid()}\n")
        (net / BRIDGE / "brif" / name).mkdir()
    (net / "eth0").mkdir()
    (net / "bt-elsewhere0").mkdir()
    (net / "bt-elsewhere0" / "owner").write_text(f"{os.getuid() + 1}\n")
    return net


def test_no_store_and_no_taps_pass(short_tmp: Path) -> None:
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp)})
    assert read_vms(paths.db) == []
    result = check_stray_taps(gather_context(paths), sys_net=_sysfs(short_tmp))
    assert result.status == "pass", result
    assert "stray taps" in [c.__name__.removeprefix("check_").replace("_", " ") for c in CHECKS]


def test_only_taps_no_vm_accounts_for_are_listed(short_tmp: Path) -> None:
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp)})
    paths.state_dir.mkdir(parents=True)
    with Store.open(paths.db) as store:
        running = _vm(store, "running")
        store.update_vm(running, state=VMState.RUNNING, tap=tap_name(running))
        creating = _vm(store, "creating")  # between open_tap and recording the tap
        stopped = _vm(store, "stopped")
        store.update_vm(stopped, state=VMState.STOPPED)
        assert accounted_for(read_vms(paths.db)) == {tap_name(running), tap_name(creating)}
    orphan = "bt-0123456789ab"  # its create was rolled back, its helper died first
    net = _sysfs(short_tmp, tap_name(running), tap_name(creating), tap_name(stopped), orphan)

    result = check_stray_taps(gather_context(paths), sys_net=net)

    assert result.status == "warn", result
    first, second = sorted([orphan, tap_name(stopped)])
    assert result.detail.startswith(f"{first} (and 1 more: {second}): a tap no VM"), result
    assert f"sudo ip link delete {first}" in result.fix
    assert "bt-elsewhere0" not in result.detail  # another user's, on no bridge of ours
