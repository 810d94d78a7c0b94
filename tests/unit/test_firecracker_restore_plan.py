"""The Firecracker restore plan: load without resuming, re-point the drives, resume.

The load reopens the disks where the snapshot recorded them (the source VM's
files); each drive is re-pointed at the new VM's own file before the guest runs
(issue #18 item 2: a restore while the source runs must never do I/O on the
source's disks). Every request is also checked against Firecracker's OpenAPI
file by ``tests/unit/test_firecracker_contract.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.vmm.firecracker import models
from banger.vmm.firecracker.models import ApiRequest
from banger.vmm.firecracker.plan import SnapshotFiles, VMFiles, restore_requests
from tests.unit.test_firecracker_contract import VM, launch_spec

SNAP = SnapshotFiles(Path("/s/state"), Path("/s/memory"))


def test_the_restore_loads_paused_repoints_the_drives_then_resumes() -> None:
    spec = launch_spec(initrd=False, read_only=False, tap=True, work=True, agent=True)
    reqs = restore_requests(spec, VMFiles.for_spec(spec), SNAP)
    assert [(r.method, r.path) for r in reqs] == [
        ("PUT", "/logger"),
        ("PUT", "/metrics"),
        ("PUT", "/snapshot/load"),
        ("PATCH", "/drives/root"),
        ("PATCH", "/drives/work"),
        ("PATCH", "/vm"),
    ]
    load = reqs[2].body
    assert load is not None and load["resume_vm"] is False
    assert load["network_overrides"] == [{"iface_id": "eth0", "host_dev_name": "bt-t1"}]
    assert reqs[3].body == {"drive_id": "root", "path_on_host": str(VM / "root.ext4")}
    assert reqs[4].body == {"drive_id": "work", "path_on_host": str(VM / "work.ext4")}
    assert reqs[5] == ApiRequest("PATCH", "/vm", {"state": "Resumed"})


def test_no_work_disk_no_work_patch() -> None:
    spec = launch_spec(initrd=False, read_only=True, tap=False, work=False)
    paths = [r.path for r in restore_requests(spec, VMFiles.for_spec(spec), SNAP)]
    assert paths == ["/logger", "/metrics", "/snapshot/load", "/drives/root", "/vm"]


def test_drive_path_update_validates() -> None:
    with pytest.raises(InvalidArgument, match="drive_id"):
        models.drive_path_update("root/../x", "/a")
    with pytest.raises(InvalidArgument, match="path_on_host"):
        models.drive_path_update("root", "relative")
    spec = launch_spec(initrd=False, read_only=False, tap=True, work=True)
    bad = dataclasses.replace(spec, work_disk=Path("rel/work.ext4"))
    with pytest.raises(InvalidArgument, match="work_disk: must be an absolute path"):
        restore_requests(bad, VMFiles.for_spec(spec), SNAP)
