"""6. Daemon footprint: bangerd's memory when idle.

Measured on a real ``bangerd`` in a throwaway BANGER_HOME (the integration
tests' harness): resident set (RSS) and unique set (USS, memory freed if the
process exited), sampled a few times after it reports ready.
"""

from __future__ import annotations

import time

import psutil
from tests.integration.bangerd_harness import running_daemon

from bench.context import BenchContext
from bench.model import BenchResult, Measurement

NAME = "footprint"
TITLE = "6. Daemon footprint"
MIB = 1024 * 1024


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
    return BenchResult(
        NAME,
        TITLE,
        measurements=(
            Measurement.of("bangerd idle: RSS", rss, "MiB"),
            Measurement.of("bangerd idle: USS", uss, "MiB"),
        ),
        notes=(
            "with 8 running VMs, and the VMM's per-VM overhead over configured guest memory: "
            "not measured yet (needs the e2e harness booting 8 TCG guests; see the report)",
        ),
    )
