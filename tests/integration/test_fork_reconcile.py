"""A fork's internal snapshot left by a killed bangerd is removed at the next start (#18).

A real bangerd on a throwaway home; no guest. What a bangerd killed -9 mid-fork
leaves is planted the way it would be: the internal snapshot's store row
(``fork.<hex>``) and its published directory. Startup reconciliation must
remove both, say so in ``state/reconcile.json``, and leave a user's snapshot
alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.fork import INTERNAL_PREFIX
from banger.doctor.reconcile_report import read_report, report_path
from banger.paths import Paths
from banger.store import SnapshotRecord, Store
from tests.integration.bangerd_harness import home_paths, running_daemon
from tests.support import short_tmpdir

#: What a QEMU snapshot directory holds once published (root disk, work disk, host key,
#: guest state, the info file).
SNAPSHOT_FILES = ("state", "root.qcow2", "work.ext4", "ssh_host_ed25519_key", "snapshot.json")


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def plant(store: Store, paths: Paths, name: str, ip: str) -> SnapshotRecord:
    record = store.create_snapshot(
        name=name, vm_id="0123456789ab", vm_name="fa", vmm="qemu", image_id=None,
        kernel_id=None, init_mode="fast", vcpus=1, memory_mib=256, work_disk_size=64 << 20,
        ip=IPv4Address(ip), mac="02:11:22:33:44:55", size=4096,
        meta={"root_file": "root.qcow2", "agent_channel": True},
    )  # fmt: skip
    where = files.snapshot_dir(paths, record.id)
    where.mkdir(mode=0o700, parents=True)
    for entry in SNAPSHOT_FILES:
        (where / entry).write_bytes(b"x" * 4096)
    return record


def test_leftover_fork_snapshots_are_removed_and_reported_at_start(home: Path) -> None:
    paths = home_paths(home)
    with Store.open(paths.db) as store:
        left = [
            plant(store, paths, f"{INTERNAL_PREFIX}a1b2c3d4e5f6", "172.30.0.2"),
            plant(store, paths, f"{INTERNAL_PREFIX}0f0f0f0f0f0f", "172.30.0.3"),
        ]
        mine = plant(store, paths, "fork-me-not", "172.30.0.4")  # a user's, kept
    with running_daemon(home) as daemon, daemon.client() as client:
        listed = client.request("GET", "/v1/snapshots")
        assert [s["name"] for s in listed] == ["fork-me-not"], listed
    with Store.open(paths.db) as store:
        assert [s.name for s in store.list_snapshots()] == ["fork-me-not"]
    for snap in left:
        assert not files.snapshot_dir(paths, snap.id).exists(), snap.name
    kept = files.snapshot_dir(paths, mine.id)
    assert sorted(p.name for p in kept.iterdir()) == sorted(SNAPSHOT_FILES)

    report = read_report(report_path(paths))
    assert report is not None
    for snap in left:
        line = (
            f"snapshot {snap.name} (of VM fa): removed, the internal snapshot "
            "of an interrupted vm fork"
        )
        assert line in report.repaired, report.repaired
    assert not any("fork-me-not" in line for line in report.repaired + report.failed)
    assert not any("snapshot" in line for line in report.failed), report.failed

    # Nothing left: the next start has nothing to repair about snapshots.
    with running_daemon(home):
        pass
    again = read_report(report_path(paths))
    assert again is not None
    assert not any("snapshot" in line for line in again.repaired + again.failed), again
