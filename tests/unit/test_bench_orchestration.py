"""The orchestration benchmark's pure parts: the baseline's argv and the time breakdown."""

from __future__ import annotations

from pathlib import Path

from bench.guests import OpTrace, stage_seconds
from bench.orchestration import BOOT_STAGES, baseline_argv, breakdown

VM_DIR = Path("/h/state/vms/abc123")
ARGV = [
    "qemu-system-x86_64", "-name", "abc123,process=banger-abc123",
    "-chardev", f"file,id=con,path={VM_DIR}/console.log,append=on",
    "-chardev", "socket,id=qmp,fd=4,server=on,wait=off",
    "-kernel", "/h/state/kernels/k1/vmlinuz",
    "-drive", f"id=root,file={VM_DIR}/root.qcow2,format=qcow2,if=none,cache=writeback",
    "-drive", f"id=work,file={VM_DIR}/work.ext4,format=raw,if=none,cache=writeback",
    "-netdev", "tap,id=n0,fd=3", "-device", "virtio-net-device,netdev=n0,mac=02:00:00:00:00:01",
]  # fmt: skip


def test_baseline_argv_moves_only_the_per_vm_files_and_the_descriptors() -> None:
    out = baseline_argv(ARGV, VM_DIR, Path("/h/state/bench-base"), 17, 18)
    changed = {(a, b) for a, b in zip(ARGV, out, strict=True) if a != b}
    assert changed == {
        (ARGV[4], "file,id=con,path=/h/state/bench-base/console.log,append=on"),
        (ARGV[6], "socket,id=qmp,fd=18,server=on,wait=off"),
        (
            ARGV[10],
            "id=root,file=/h/state/bench-base/root.qcow2,format=qcow2,if=none,cache=writeback",
        ),
        (ARGV[12], "id=work,file=/h/state/bench-base/work.ext4,format=raw,if=none,cache=writeback"),
        (ARGV[14], "tap,id=n0,fd=17"),
    }


def _event(stage: str, at: str, kind: str = "stage") -> dict[str, str]:
    return {"kind": kind, "stage": stage, "at": f"2026-01-01T00:00:{at}+00:00"}


def test_stage_seconds_run_to_the_next_stage_and_the_last_to_the_end() -> None:
    events = [_event("resolve", "01.0"), _event("x", "01.5", kind="info"),
              _event("launch", "02.0"), _event("wait_ssh", "02.5")]  # fmt: skip
    end = stage_seconds([], 0.0)
    assert end == ()
    stages = stage_seconds(events, _ts("09.5"))
    assert stages == (("resolve", 1.0), ("launch", 0.5), ("wait_ssh", 7.0))


def _ts(sec: str) -> float:
    from bench.guests import at

    return at(f"2026-01-01T00:00:{sec}+00:00")


def test_breakdown_adds_up_to_the_wall_time_and_knows_the_boot() -> None:
    stages = (("resolve", 0.1), ("launch", 0.2), ("wait_ssh", 7.0), ("running", 0.5))
    create = OpTrace("c", "vm.create", 10.2, 18.0, stages)
    delete = OpTrace("d", "vm.rm", 18.6, 18.9, (("stop", 0.1), ("delete", 0.2)))
    r = breakdown(10.0, 19.0, create, delete)
    assert r.total == 9.0
    assert abs(r.boot - 7.2) < 1e-9 and BOOT_STAGES == ("launch", "wait_ssh")
    assert abs(sum(s for _, s in r.parts) - r.total) < 1e-9
