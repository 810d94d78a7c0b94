"""Host-side stats against real things: a child process, qcow2 and sparse files, a tap."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from banger.procinfo import process_start_time
from banger.vmm.stats import ProcessSampler, disk_stats, host_stats, tap_stats
from tests.support import netns, wait_until

MIB = 1024 * 1024


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that spins the CPU and holds ~32 MiB resident (waited for, not slept on)."""
    code = "b = bytearray(32 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nwhile True: pass\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    try:
        proc = psutil.Process(child.pid)
        wait_until(lambda: proc.memory_info().rss > 32 * MIB, 60, "the child holds 32 MiB")
        yield child
    finally:
        child.kill()
        child.wait()


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_process_stats_of_a_real_child(busy_child: subprocess.Popen[bytes]) -> None:
    start = process_start_time(busy_child.pid)
    assert start is not None
    sampler = ProcessSampler(interval=0.3)
    first = sampler.sample(busy_child.pid, start)
    assert first is not None
    assert first.pid == busy_child.pid
    assert first.rss_bytes > 32 * MIB
    # Lower bound: a fresh sample waits its interval with the child alive. The
    # upper bound is no number of seconds but an observable: the child is younger
    # than this test process, which started it (1 s for create_time's rounding).
    assert first.uptime_seconds >= 0.3
    assert first.uptime_seconds <= time.time() - psutil.Process().create_time() + 1
    # A spinning loop uses CPU, however little a loaded host leaves it.
    assert first.cpu_percent > 0
    spent = cpu_seconds(busy_child.pid)
    wait_until(lambda: cpu_seconds(busy_child.pid) >= spent + 0.1, 60, "the child spins on")
    second = sampler.sample(busy_child.pid, start)  # cached Process: no extra wait
    assert second is not None and second.cpu_percent > 0
    assert second.uptime_seconds > first.uptime_seconds


def test_wrong_start_time_or_dead_process_is_none(busy_child: subprocess.Popen[bytes]) -> None:
    start = process_start_time(busy_child.pid)
    assert start is not None
    sampler = ProcessSampler(interval=0.05)
    assert sampler.sample(busy_child.pid, start + 1) is None  # a recycled pid
    busy_child.kill()
    busy_child.wait()
    assert sampler.sample(busy_child.pid, start) is None


def test_sparse_raw_file(tmp_path: Path) -> None:
    disk = tmp_path / "work.ext4"
    with open(disk, "wb") as f:
        f.truncate(256 * MIB)
        f.write(b"x" * MIB)
    stats = disk_stats(disk)
    assert stats is not None
    assert stats.format == "raw"
    assert stats.virtual_bytes == 256 * MIB
    assert MIB <= stats.allocated_bytes < 8 * MIB


def test_qcow2_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    with open(base, "wb") as f:
        f.truncate(64 * MIB)
    overlay = tmp_path / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-c", "write -P 7 0 2M", str(overlay)], check=True, capture_output=True
    )
    stats = disk_stats(overlay)
    assert stats is not None
    assert stats.format == "qcow2"
    assert stats.virtual_bytes == 64 * MIB
    assert 2 * MIB <= stats.allocated_bytes < 16 * MIB
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, check=True
        ).stdout
    )
    assert stats.allocated_bytes == info["actual-size"]


def test_missing_disk_and_tap_are_left_out(tmp_path: Path) -> None:
    stats = host_stats(
        ProcessSampler(),
        pid=None,
        start_time=None,
        disks={"root": tmp_path / "absent", "work": tmp_path / "also-absent"},
        tap="bt-absent0",
    )
    assert stats.process is None and stats.disks == {} and stats.net is None
    assert tap_stats("bt-absent0") is None


# Runs inside the namespace: makes a tap, writes frames into it (the kernel
# counts them as received on the tap), prints what banger.vmm.stats reads back.
TAP_SCRIPT = r"""
import fcntl, json, os, struct, subprocess, dataclasses
from banger.vmm.stats import tap_stats
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"bt-stats0", 0x0002 | 0x1000))
subprocess.run(["ip", "link", "set", "bt-stats0", "up"], check=True)
before = tap_stats("bt-stats0")
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(46)
for _ in range(3):
    os.write(fd, frame)
after = tap_stats("bt-stats0")
print(json.dumps([dataclasses.asdict(before), dataclasses.asdict(after)]))
"""


@pytest.mark.root
def test_tap_counters_in_a_namespace() -> None:
    with netns("bgs") as ns:
        out = ns.run(sys.executable, "-c", TAP_SCRIPT)
    before, after = json.loads(out.stdout)
    assert after["interface"] == "bt-stats0"
    assert after["rx_packets"] - before["rx_packets"] == 3
    assert after["rx_bytes"] - before["rx_bytes"] == 3 * 60
