"""Startup reconciliation of files, the report, the probes and the doctor check — real files,
a real store, real /proc and sysfs (no guests: tests/reliability/test_faults.py has those)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from banger.daemon.ops import Operations
from banger.daemon.reconcile.probe import vmm_processes
from banger.daemon.reconcile.startup import before_serving
from banger.daemon.vms.watch import exit_reason
from banger.doctor.checks import gather_context
from banger.doctor.reconcile import check_reconciliation
from banger.doctor.reconcile_report import ReconcileReport, read_report, report_path
from banger.net.taps import banger_taps
from banger.paths import Paths
from banger.store import Store


def _paths(root: Path) -> Paths:
    paths = Paths.from_env({"BANGER_HOME": str(root)})
    for d in (paths.state_dir, paths.tmp_dir, paths.images_dir, paths.kernels_dir, paths.vms_dir):
        d.mkdir(parents=True, exist_ok=True)
    return paths


def _vm(store: Store, name: str) -> str:
    return store.create_vm(
        name=name, image_id=None, kernel_id=None, vmm="qemu", init_mode="fast",
        vcpus=1, memory_mib=256, work_disk_size=64 << 20,
    ).id  # fmt: skip


def test_leftovers_are_removed_and_work_disks_kept(short_tmp: Path) -> None:
    paths = _paths(short_tmp)
    with Store.open(paths.db) as store:
        # an image published (renamed) but never recorded, and one recorded whose dir is gone
        (paths.images_dir / "aaaaaaaaaaaa").mkdir()
        (paths.images_dir / "aaaaaaaaaaaa" / "rootfs.ext4").write_bytes(b"x")
        lost = store.create_image(name="lost", source="test", id="bbbbbbbbbbbb")
        (paths.kernels_dir / "cccccccccccc").mkdir()
        (paths.images_dir / "lost+found").mkdir()  # not an id: never touched
        # temp builds of every kind
        for name in ("build-1", "kernel-x.partial", "deb-1234.partial", "register-9"):
            (paths.tmp_dir / name).mkdir()
        # VM dirs: a recorded one with a half-written disk, an orphan with a work disk,
        # an orphan without one
        vm_id = _vm(store, "kept")
        (paths.vm_dir(vm_id)).mkdir()
        paths.vm_work_disk(vm_id).write_bytes(b"owner data")
        (paths.vm_dir(vm_id) / ".root.qcow2.tmp-1234").write_bytes(b"half")
        orphan_disk = paths.vm_dir("dddddddddddd")
        orphan_disk.mkdir()
        (orphan_disk / "work.ext4").write_bytes(b"maybe someone's work")
        orphan_empty = paths.vm_dir("eeeeeeeeeeee")
        orphan_empty.mkdir()
        (orphan_empty / "console.log").write_text("boot\n")

        startup = before_serving(paths, store, Operations(store))
        report = startup.report

        assert not (paths.images_dir / "aaaaaaaaaaaa").exists()
        assert (paths.images_dir / "lost+found").is_dir()
        assert lost.id not in {i.id for i in store.list_images()}
        assert not (paths.kernels_dir / "cccccccccccc").exists()
        assert list(paths.tmp_dir.iterdir()) == []
        assert paths.vm_work_disk(vm_id).read_bytes() == b"owner data"
        assert not (paths.vm_dir(vm_id) / ".root.qcow2.tmp-1234").exists()
        assert (orphan_disk / "work.ext4").exists()
        assert not orphan_empty.exists()
        assert report.failed == []
        assert len(report.kept) == 1 and "dddddddddddd" in report.kept[0]
        assert len(report.repaired) == 9, report.repaired


def test_interrupted_operations_are_remembered_then_failed(short_tmp: Path) -> None:
    paths = _paths(short_tmp)
    with Store.open(paths.db) as store:
        op = store.create_operation("vm.create", "x")
        store.update_operation(op.id, stage="root_disk")
        startup = before_serving(paths, store, Operations(store))
        assert [(i.kind, i.target, i.stage) for i in startup.interrupted] == [
            ("vm.create", "x", "root_disk")
        ]
        after = store.get_operation(op.id)
        assert after.state.value == "failed" and after.stage == "root_disk"
        assert "interrupted at stage root_disk" in startup.report.repaired[0]


def test_the_report_round_trips_and_doctor_reads_it(short_tmp: Path) -> None:
    paths = _paths(short_tmp)
    ctx = gather_context(paths)
    assert check_reconciliation(ctx).status == "pass"  # no report yet
    clean = ReconcileReport()
    clean.write(report_path(paths))
    result = check_reconciliation(ctx)
    assert result.status == "pass" and "agreed" in result.detail
    report = ReconcileReport()
    report.fixed("tap bt-1: deleted")
    report.fixed("lease 10.0.0.2: released")
    report.write(report_path(paths))
    assert read_report(report_path(paths)) == report
    assert report_path(paths).stat().st_mode & 0o777 == 0o600
    result = check_reconciliation(ctx)
    assert result.status == "pass" and "repaired 2: tap bt-1: deleted (and 1 more)" in result.detail
    report.fail("tap bt-2: helper down")
    report.write(report_path(paths))
    result = check_reconciliation(ctx)
    assert result.status == "warn" and "bt-2" in result.detail
    report_path(paths).write_text("{not json")
    assert read_report(report_path(paths)) is None


def test_vmm_processes_finds_only_processes_naming_our_vm_dirs(short_tmp: Path) -> None:
    vms = short_tmp / "vms"
    vms.mkdir()
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"file={vms}/abcdefabcdef/work.ext4"]
    )
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"{short_tmp}/elsewhere/x"]
    )
    try:
        found = vmm_processes(vms, os.getuid())
        assert [(p.pid, p.vm_id) for p in found] == [(ours.pid, "abcdefabcdef")]
        assert vmm_processes(vms, os.getuid() + 12345) == []
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()


def test_banger_taps_reads_sysfs(short_tmp: Path) -> None:
    """A fake sysfs tree with the kernel's layout: bridge ports and tun owners."""
    net = short_tmp / "net"
    (net / "br0" / "brif" / "bt-onbridge").mkdir(parents=True)
    for name, owner in (("bt-onbridge", "0"), ("bt-mine", "1000"), ("bt-theirs", "1001")):
        (net / name).mkdir()
        (net / name / "owner").write_text(owner + "\n")
    (net / "eth0").mkdir()
    assert banger_taps("br0", 1000, net) == ["bt-mine", "bt-onbridge"]
    assert banger_taps("br0", 1000, short_tmp / "missing") == []


def test_exit_reason_names_the_signal() -> None:
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.send_signal(signal.SIGKILL)
    _, status = os.waitpid(killed.pid, 0)
    killed.returncode = -signal.SIGKILL  # reaped by hand above
    assert exit_reason(7, status).endswith("killed by SIGKILL")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    _, status = os.waitpid(done.pid, 0)
    done.returncode = 0
    assert "exit status 0 (the guest powered off)" in exit_reason(7, status)
    assert exit_reason(7, None) == "the VMM (pid 7) exited while the VM was running"
