"""6. Daemon footprint: bangerd's memory idle and with running VMs; the VMM's per-VM overhead.

Idle: a real ``bangerd`` in a throwaway BANGER_HOME (the integration tests'
harness): resident set (RSS) and unique set (USS, memory freed if the process
exited), sampled a few times after it reports ready.

With VMs: the e2e harness (root helper + the owner's bangerd in a namespace,
seeded kernel and image). bangerd is sampled with no VM, then with 8 VMs
created and started (fast init, ``--memory 256``; started 4 at a time, which
2 cores can boot within the harness's boot timeout). For each VM: the QEMU
process's RSS against the 256 MiB configured, split with /proc/PID/smaps into
the guest's RAM mapping (the one mapping of exactly the guest's size) and the
rest: the VMM's own cost (QEMU itself, its TCG translation cache of 64 MiB,
device state).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from tests.e2e.harness import Banger, banger_env
from tests.integration.bangerd_harness import running_daemon

from bench.context import BenchContext
from bench.guests import bangerd_pid, finish_cli, start_cli
from bench.model import BenchResult, Measurement, Table
from bench.stats import median

NAME = "footprint"
TITLE = "6. Daemon footprint"
MIB = 1024 * 1024
VMS = 8
AT_ONCE = 4
GUEST_MIB = 256
START_TIMEOUT = 600.0


def sample_memory(pid: int, samples: int, interval: float) -> tuple[list[float], list[float]]:
    """RSS and USS in MiB, ``samples`` times ``interval`` seconds apart."""
    process = psutil.Process(pid)
    rss: list[float] = []
    uss: list[float] = []
    for index in range(samples):
        if index:
            time.sleep(interval)
        info = process.memory_full_info()
        rss.append(info.rss / MIB)
        uss.append(info.uss / MIB)
    return rss, uss


def run(ctx: BenchContext) -> BenchResult:
    home = ctx.workdir / "h"
    home.mkdir()
    with running_daemon(home) as daemon:
        time.sleep(0.5 if ctx.quick else 2.0)  # past start-up reconciliation
        rss, uss = sample_memory(daemon.proc.pid, ctx.rounds(5, 2), 0.5)
    measurements = [
        Measurement.of("bangerd idle: RSS", rss, "MiB"),
        Measurement.of("bangerd idle: USS", uss, "MiB"),
    ]
    loaded = with_vms(2 if ctx.quick else VMS, ctx.rounds(3, 1))
    measurements += loaded.measurements
    return BenchResult(
        NAME, TITLE, measurements=tuple(measurements), notes=loaded.notes, tables=loaded.tables
    )


@dataclass(frozen=True)
class Loaded:
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...]
    tables: tuple[Table, ...]


def start_vms(b: Banger, names: list[str]) -> tuple[list[str], list[str]]:
    """Create + start ``names``, AT_ONCE at a time: the names that came up, and the errors."""
    up: list[str] = []
    failures: list[str] = []
    for first in range(0, len(names), AT_ONCE):
        group = names[first : first + AT_ONCE]
        started = [
            start_cli(b, "vm", "create", "--name", name, "--init", "fast", "--memory",
                      str(GUEST_MIB), "--start")
            for name in group
        ]  # fmt: skip
        results = [finish_cli(at, child, START_TIMEOUT) for at, child in started]
        for name, r in zip(group, results, strict=True):
            if r.returncode == 0:
                up.append(name)
            else:
                failures.append(f"{name}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return up, failures


def guest_ram_rss_mib(pid: int, guest_mib: int) -> float | None:
    """Resident MiB of the guest's RAM mapping in the VMM (the mapping exactly guest-sized)."""
    want_kb = guest_mib * 1024
    total_kb, size_kb, found = 0, 0, False
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Size":
            size_kb = int(value.split()[0])
        elif key == "Rss" and size_kb == want_kb:
            total_kb += int(value.split()[0])
            found = True
    return total_kb / 1024 if found else None


def with_vms(count: int, samples: int) -> Loaded:
    names = [f"fp-{i}" for i in range(count)]
    with banger_env() as b:
        pid = bangerd_pid(b)
        time.sleep(1.0)
        idle_rss, _ = sample_memory(pid, samples, 0.5)
        up, failures = start_vms(b, names)
        time.sleep(2.0)  # the guests settle (fast init: sshd started, nothing else)
        busy_rss, busy_uss = sample_memory(pid, samples, 0.5)
        vmm_rss, guest_ram, overhead = [], [], []
        for name in up:
            pid = int(json.loads(b.banger("vm", "show", name, "--json").stdout)["pid"])
            rss = psutil.Process(pid).memory_info().rss / MIB
            vmm_rss.append(rss)
            ram = guest_ram_rss_mib(pid, GUEST_MIB)
            if ram is not None:
                guest_ram.append(ram)
                overhead.append(rss - ram)
    n = len(up)
    measurements = [
        Measurement.of("bangerd, e2e harness, no VM: RSS", idle_rss, "MiB"),
        Measurement.of(f"bangerd with {n} running VMs: RSS", busy_rss, "MiB"),
        Measurement.of(f"bangerd with {n} running VMs: USS", busy_uss, "MiB"),
    ]
    notes = []
    if n < count:
        notes.append(
            f"only {n} of {count} VMs came up (batches of {AT_ONCE}); " + "; ".join(failures[:2])
        )
    rows: list[tuple[str, ...]] = []
    if vmm_rss:
        measurements.append(Measurement.of("QEMU RSS per VM (256 MiB guest)", vmm_rss, "MiB"))
        per_vm = (median(busy_rss) - median(idle_rss)) / max(n, 1)
        rows.append(("bangerd growth per running VM (RSS)", f"{per_vm:.2f} MiB"))
        rows.append(("QEMU RSS / guest memory configured", f"{median(vmm_rss) / GUEST_MIB:.2f}"))
    if overhead:
        measurements.append(Measurement.of("  of which: guest RAM resident", guest_ram, "MiB"))
        measurements.append(Measurement.of("  of which: the VMM's own (QEMU, TCG cache)", overhead,
                                           "MiB"))  # fmt: skip
    table = Table(f"Per VM ({n} running, fast init, {GUEST_MIB} MiB each)", ("quantity", "value"),
                  tuple(rows))  # fmt: skip
    return Loaded(tuple(measurements), tuple(notes), (table,) if rows else ())
