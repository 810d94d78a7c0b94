"""Host-side VM statistics: the VMM process, the disk files, the tap counters.

Everything here is read from the host without touching the guest:

- the VMM process (psutil): CPU % over a short interval (100 % = one host
  core, as ``top`` shows it), resident memory, uptime. The process is named by
  pid *and* start time, so a recycled pid is never reported as the VM;
- each disk file: bytes allocated on the host (``st_blocks * 512``) against
  its virtual size — for qcow2 from ``qemu-img info --output=json`` (``-U``:
  the running VMM holds the image lock);
- the tap's counters from ``/sys/class/net/<tap>/statistics``. The tap lives
  in the daemon's network namespace, which is where these are read.

All of it blocks briefly (a sampling interval, a ``qemu-img`` run): the
daemon calls :func:`host_stats` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from banger.proc import run
from banger.procinfo import process_start_time

SYS_CLASS_NET = Path("/sys/class/net")
QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    cpu_percent: float
    rss_bytes: int
    uptime_seconds: float


@dataclass(frozen=True)
class DiskStats:
    path: str
    format: str  # "qcow2" or "raw"
    allocated_bytes: int
    virtual_bytes: int


@dataclass(frozen=True)
class NetStats:
    interface: str
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True)
class HostStats:
    process: ProcessStats | None  # None: the VMM is not running
    disks: dict[str, DiskStats]  # "root", "work" -> stats (absent files left out)
    net: NetStats | None


class ProcessSampler:
    """CPU % needs two samples; keeping the psutil.Process between calls gives
    ``vm stats --watch`` an instant figure after the first refresh."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._procs: dict[tuple[int, int], psutil.Process] = {}
        self._lock = threading.Lock()

    def sample(self, pid: int, start_time: int) -> ProcessStats | None:
        """Stats for the process ``pid`` that started at ``start_time`` (clock ticks)."""
        if process_start_time(pid) != start_time:
            self._forget(pid, start_time)
            return None
        key = (pid, start_time)
        with self._lock:
            proc = self._procs.get(key)
            fresh = proc is None
            if proc is None:
                proc = self._procs[key] = psutil.Process(pid)
        try:
            with proc.oneshot():
                if fresh:
                    proc.cpu_percent(None)  # first call only primes the counters
            if fresh:
                time.sleep(self.interval)
            cpu = proc.cpu_percent(None)
            rss = proc.memory_info().rss
            uptime = max(0.0, time.time() - proc.create_time())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._forget(pid, start_time)
            return None
        if process_start_time(pid) != start_time:  # it died and the pid was reused meanwhile
            self._forget(pid, start_time)
            return None
        return ProcessStats(pid, cpu, int(rss), uptime)

    def _forget(self, pid: int, start_time: int) -> None:
        with self._lock:
            self._procs.pop((pid, start_time), None)


def disk_format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def disk_stats(path: Path) -> DiskStats | None:
    """Allocation against virtual size for one disk file; None if it does not exist."""
    try:
        st = path.stat()
        fmt = disk_format(path)
    except FileNotFoundError:
        return None
    if fmt == "qcow2":
        out = run(["qemu-img", "info", "-U", "--output=json", path], timeout=30).out
        info = json.loads(out)
        return DiskStats(str(path), fmt, int(info["actual-size"]), int(info["virtual-size"]))
    return DiskStats(str(path), fmt, st.st_blocks * 512, st.st_size)


def tap_stats(interface: str, *, sys_class_net: Path = SYS_CLASS_NET) -> NetStats | None:
    """The interface's byte and packet counters (host view: rx = from the guest)."""
    base = sys_class_net / interface / "statistics"

    def counter(name: str) -> int:
        return int((base / name).read_text().strip())

    try:
        return NetStats(
            interface,
            rx_bytes=counter("rx_bytes"),
            tx_bytes=counter("tx_bytes"),
            rx_packets=counter("rx_packets"),
            tx_packets=counter("tx_packets"),
        )
    except FileNotFoundError:
        return None


def host_stats(
    sampler: ProcessSampler,
    *,
    pid: int | None,
    start_time: int | None,
    disks: dict[str, Path],
    tap: str | None,
) -> HostStats:
    """Everything host-side for one VM (blocking; run it in a thread)."""
    process = None
    if pid is not None and start_time is not None:
        process = sampler.sample(pid, start_time)
    found = {}
    for role, path in disks.items():
        stats = disk_stats(path)
        if stats is not None:
            found[role] = stats
    return HostStats(process, found, tap_stats(tap) if tap else None)
