"""11. ``vm fork -n 4`` vs four cold boots, and the memory each child costs.

Issue #18 item 7 (the fork part): four running copies of one prepared guest,
made two ways in one run, interleaved round by round, in the e2e harness (root
helper + the owner's bangerd in a network namespace, fast-init guests, QEMU
under TCG here):

- fork: ``vm fork SRC -n 4`` on a running source; wall clock of the CLI call
  (the source's freeze/save/copy, four restores and re-identifications, each
  confirmed over SSH), plus how long the source itself was held (the
  operation's ``source_held_s``);
- cold: four ``vm create --start`` started at once (what a user without fork
  would run); wall clock from the first start to the last exit.

Memory: each child's QEMU resident set after the fork, next to the source's.
QEMU 7.2 restores a child's RAM from the saved state into its own anonymous
memory (no shared-memory restore), so every child costs what its guest had
touched; a newer QEMU with ``x-ignore-shared`` over a shared memory backend,
or Firecracker's ``MAP_PRIVATE`` snapshot memory file, would share the
untouched pages between children (not measurable here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import psutil
from tests.e2e.harness import Banger, banger_env

from bench.context import BenchContext
from bench.guests import finish_cli, ops_for, start_cli, timed_cli
from bench.model import BenchResult, Measurement, Ratio
from bench.stats import median, ratio
from bench.timing import interleaved

NAME = "fork"
TITLE = "11. vm fork -n 4 vs four cold boots (fast init, TCG)"
CHILDREN = 4
SOURCE = "fsrc"
TIMEOUT = 1800.0
MIB = 1024 * 1024


def vm_pid(b: Banger, name: str) -> int:
    return int(json.loads(b.banger("vm", "show", name, "--json").stdout)["pid"])


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MIB


def source_held(b: Banger) -> float | None:
    """``source_held_s`` of the last fork of the source (its result event)."""
    forks = [op for op in ops_for(b, SOURCE) if op["kind"] == "vm.fork"]
    if not forks:
        return None
    out = b.banger("ops", "show", forks[-1]["id"], "--follow", "--json", check=False).stdout
    for line in filter(str.strip, out.splitlines()):
        data = json.loads(line).get("data")
        if isinstance(data, dict) and "source_held_s" in data:
            return float(data["source_held_s"])
    return None


def run(ctx: BenchContext) -> BenchResult:
    held: list[float] = []
    child_rss: list[float] = []
    source_rss: list[float] = []
    with banger_env() as b:
        b.banger("vm", "create", "--name", SOURCE, "--init", "fast", "--start", timeout=TIMEOUT)
        counter = iter(range(1000))

        def remove(names: list[str]) -> None:
            for name in names:
                b.banger("vm", "rm", "--force", name, check=False, timeout=300)

        def fork_case() -> float:
            prefix = f"fk{next(counter)}"
            names = [f"{prefix}-{i}" for i in range(1, CHILDREN + 1)]
            timed = timed_cli(b, "vm", "fork", SOURCE, "-n", str(CHILDREN), "--name", prefix,
                              timeout=TIMEOUT)  # fmt: skip
            try:
                if timed.returncode != 0:
                    raise RuntimeError(f"vm fork failed: {timed.stderr[-300:]}")
                child_rss.extend(rss_mib(vm_pid(b, name)) for name in names)
                source_rss.append(rss_mib(vm_pid(b, SOURCE)))
                if (seconds := source_held(b)) is not None:
                    held.append(seconds)
                return timed.seconds
            finally:
                remove(names)

        def cold_case() -> float:
            names = [f"cold{next(counter)}-{i}" for i in range(1, CHILDREN + 1)]
            started = [start_cli(b, "vm", "create", "--name", n, "--init", "fast", "--start")
                       for n in names]  # fmt: skip
            try:
                results = [finish_cli(s, child, TIMEOUT) for s, child in started]
                failed = [r.stderr[-300:] for r in results if r.returncode != 0]
                if failed:
                    raise RuntimeError(f"a cold boot failed: {failed[0]}")
                return max(r.end for r in results) - min(r.start for r in results)
            finally:
                remove(names)

        cases: dict[str, Callable[[], float]] = {
            f"vm fork -n {CHILDREN}": fork_case,
            f"{CHILDREN} cold vm create --start at once": cold_case,
        }
        runs = interleaved(cases, ctx.rounds(2, 1))
        load = os.getloadavg()[0]
    notes = [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
    notes.append(f"load average {load:.1f} at the end")
    fork_s = runs.samples[f"vm fork -n {CHILDREN}"]
    cold_s = runs.samples[f"{CHILDREN} cold vm create --start at once"]
    if not fork_s or not cold_s:
        return BenchResult(NAME, TITLE, notes=tuple(notes))
    measurements = [
        Measurement.of(f"vm fork -n {CHILDREN} (wall, CLI)", fork_s),
        Measurement.of(f"{CHILDREN} cold boots at once (wall)", cold_s),
    ]
    if held:
        measurements.append(Measurement.of("source held by the fork", held))
    if child_rss and source_rss:
        measurements += [
            Measurement.of("RSS of each child's QEMU", child_rss, "MiB"),
            Measurement.of("RSS of the source's QEMU", source_rss, "MiB"),
        ]
        notes.append(
            "QEMU 7.2 has no shared-memory restore: each child holds its own copy of what "
            "the guest had touched; a shared memory backend with x-ignore-shared (newer "
            "QEMU) or Firecracker's MAP_PRIVATE snapshot memory would share untouched pages"
        )
    speedup = Ratio(f"{CHILDREN} cold boots / vm fork -n {CHILDREN}",
                    ratio(median(cold_s), median(fork_s)))  # fmt: skip
    return BenchResult(
        NAME, TITLE, measurements=tuple(measurements), ratios=(speedup,), notes=tuple(notes)
    )
