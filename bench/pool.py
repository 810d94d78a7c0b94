"""12. ``vm run --pool`` vs a cold ``vm run``, and what keeping guests ready costs.

Issue #18 item 7 (the warm/cold part; goal: warm at least 8x faster under TCG).
In the e2e harness (root helper + the owner's bangerd in a network namespace,
QEMU under TCG here), one pool of fast-init guests with the default image,
kernel, CPUs and memory, the same shape as the cold run's VM. Rounds
interleaved:

- warm: ``vm run --pool P --rm --no-workspace -- true``, wall clock of the CLI
  (a ready, running guest taken, renamed, its file_sync and identity applied,
  ``true`` run, the VM removed);
- cold: ``vm run --rm --init fast --no-workspace -- true``, wall clock of the
  CLI (the whole boot).

Before *each* sample, warm or cold, the bench waits (untimed) until the pool
is ``ready`` again with all its guests: a warm sample never finds the pool
empty (which would boot cold), and the refill a take starts never overlaps
the next sample. The warm run's wall time is cut at its operations' event
timestamps: the take's own stages (take, identity, file_sync, running) and
the CLI's share around them and the rm.

The cost of readiness: after the rounds and a short settle, each ready
guest's QEMU resident set, and its CPU use over a few seconds of idling (% of
one core). Ready guests are kept running, not paused: the daemon holds an SSH
connection to each, and a paused guest's connection would have to be re-made
on take (a key exchange, over a second under TCG), so running is what makes
the take fast; the price is the idle CPU and memory reported here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from tests.e2e.harness import Banger, banger_env

from banger.daemon.pools.service import REFILL_AFTER_TAKE
from bench.context import BenchContext
from bench.guests import OpTrace, ops_for, timed_cli, trace
from bench.model import BenchResult, Measurement, Ratio, Table, Target
from bench.stats import median, ratio
from bench.timing import interleaved

NAME = "pool"
TITLE = "12. vm run --pool vs cold vm run (fast init, TCG)"
POOL = "bp"
SIZE = 2
GOAL = 8.0
#: a fill boots one guest cold and restores the rest: minutes under emulation and load
FILL_TIMEOUT = 1800.0
RUN_TIMEOUT = 900.0
#: seconds between readiness probes: each is a CLI start, which takes CPU the refill needs
PROBE_INTERVAL = 1.0
#: after the last round, before measuring the ready guests: the refill's restore settles
SETTLE = 10.0
IDLE_WINDOW = 5.0
MIB = 1024 * 1024
#: the take's stages, in order (banger.daemon.pools.service)
TAKE_STAGES = ("take", "identity", "file_sync", "running")
#: what the warm samples do not include: their own refill (pools.service.REFILL_AFTER_TAKE)
REFILL_DELAYED = (
    f"a take's refill starts {REFILL_AFTER_TAKE:g} s after it, so a warm sample's `true` and "
    "rm do not share the CPU with its own refill (a restore and an SSH key exchange, ~10 s of "
    "a core under TCG); the untimed wait before each sample lets that refill finish"
)
WARM = "warm: vm run --pool --rm -- true (wall)"
COLD = "cold: vm run --rm --init fast -- true (wall)"
KEPT_RUNNING = (
    "ready guests are kept running, not paused: the daemon holds an SSH connection to each, "
    "and a paused guest's held connection would have to be re-made on take (a key exchange, "
    "~1+ s under TCG); the idle CPU and the RSS above are that choice's price per ready guest"
)


def pool_show(b: Banger) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(b.banger("pool", "show", POOL, "--json").stdout)
    return shown


def wait_ready(b: Banger) -> dict[str, Any]:
    """Until the pool has all ``SIZE`` guests ready; a failed fill raises."""
    deadline = time.monotonic() + FILL_TIMEOUT
    while True:
        shown = pool_show(b)
        if shown["state"] == "failed":
            raise RuntimeError(f"pool {POOL} fill failed: {shown.get('error')}")
        if shown["state"] == "ready" and len(shown["ready"]) == SIZE:
            return shown
        if time.monotonic() > deadline:
            raise TimeoutError(f"pool {POOL} not ready within {FILL_TIMEOUT:g} s: {shown}")
        time.sleep(PROBE_INTERVAL)


@dataclass(frozen=True)
class WarmRound:
    total: float
    #: where the time went, in order (seconds)
    parts: tuple[tuple[str, float], ...]


def warm_breakdown(start: float, end: float, create: OpTrace, delete: OpTrace) -> WarmRound:
    """The warm run's wall time cut at its operations' timestamps (pure; tested)."""
    parts: list[tuple[str, float]] = [("CLI: start, request the take", create.created - start)]
    parts += [(f"take: {stage}", create.stage(stage)) for stage in TAKE_STAGES]
    parts.append(("CLI: follow ends, `true` over the exec API, request the rm",
                  delete.created - create.finished))  # fmt: skip
    parts.append(("rm (stop, tap, files)", delete.finished - delete.created))
    parts.append(("CLI: follow the rm, exit", end - delete.finished))
    return WarmRound(end - start, tuple(parts))


def warm_round(b: Banger, name: str) -> WarmRound:
    run = timed_cli(b, "vm", "run", "--pool", POOL, "--rm", "--no-workspace", "--name", name,
                    "--", "true", timeout=RUN_TIMEOUT)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"vm run --pool exited {run.returncode}: {run.stderr[-400:]}")
    ops = ops_for(b, name)
    create = next(trace(b, op) for op in ops if op["kind"] == "vm.create")
    delete = next(trace(b, op) for op in ops if op["kind"] == "vm.rm")
    if "identity" not in {stage for stage, _ in create.stages}:
        raise RuntimeError("the take found no ready guest and booted cold")
    return warm_breakdown(run.start, run.end, create, delete)


@dataclass(frozen=True)
class ReadyCost:
    state: str
    rss_mib: float
    idle_cpu_percent: float


def ready_costs(b: Banger, names: Sequence[str]) -> list[ReadyCost]:
    """Each ready guest's QEMU: RSS, and CPU % of one core over one idle window (all at once)."""
    shown = [json.loads(b.banger("vm", "show", n, "--json").stdout) for n in names]
    procs = [psutil.Process(int(vm["pid"])) for vm in shown]
    for p in procs:
        p.cpu_percent(None)  # starts each process's window
    time.sleep(IDLE_WINDOW)
    return [
        ReadyCost(str(vm["state"]), p.memory_info().rss / MIB, p.cpu_percent(None))
        for vm, p in zip(shown, procs, strict=True)
    ]


def run(ctx: BenchContext) -> BenchResult:
    warm_rounds: list[WarmRound] = []
    costs: list[ReadyCost] = []
    notes: list[str] = []
    with banger_env() as b:
        # vm list (and so the harness's clean-up) does not show ready guests: pool rm does
        try:
            b.banger("pool", "set", POOL, "--size", str(SIZE), "--init", "fast", timeout=300)
            counter = iter(range(1000))

            def warm_case() -> float:
                wait_ready(b)  # untimed: the take must find a ready guest
                warm_rounds.append(warm_round(b, f"warm{next(counter)}"))
                return warm_rounds[-1].total

            def cold_case() -> float:
                wait_ready(b)  # untimed: the last take's refill must not overlap the boot
                timed = timed_cli(b, "vm", "run", "--rm", "--init", "fast", "--no-workspace",
                                  "--name", f"cold{next(counter)}", "--", "true",
                                  timeout=RUN_TIMEOUT)  # fmt: skip
                if timed.returncode != 0:
                    raise RuntimeError(f"cold vm run exited {timed.returncode}: "
                                       f"{timed.stderr[-400:]}")  # fmt: skip
                return timed.seconds

            cases: dict[str, Callable[[], float]] = {WARM: warm_case, COLD: cold_case}
            runs = interleaved(cases, ctx.rounds(3, 1))
            notes += [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
            try:
                ready = wait_ready(b)["ready"]
                time.sleep(SETTLE)
                costs = ready_costs(b, ready)
            except Exception as exc:  # the timings still count without the readiness cost
                notes.append(f"ready guests' cost not measured: {type(exc).__name__}: {exc}")
            notes.append(f"load average {os.getloadavg()[0]:.1f} at the end")
        finally:
            b.banger("pool", "rm", POOL, check=False, timeout=600)
    return summarize(runs.samples[WARM], runs.samples[COLD], warm_rounds, costs, notes)


def summarize(warm: Sequence[float], cold: Sequence[float], warm_rounds: Sequence[WarmRound],
              costs: Sequence[ReadyCost], notes: list[str]) -> BenchResult:  # fmt: skip
    """Measurements, the cold/warm ratio against the goal, the warm breakdown (pure; tested)."""
    if not warm or not cold:
        return BenchResult(NAME, TITLE, notes=tuple(notes) or ("no round finished",))
    measurements = [Measurement.of(WARM, warm), Measurement.of(COLD, cold)]
    speedup = ratio(median(cold), median(warm))
    tables: list[Table] = []
    slowest = ""
    if warm_rounds:
        labels = [label for label, _ in warm_rounds[0].parts]
        medians = [median([r.parts[i][1] for r in warm_rounds]) for i in range(len(labels))]
        rows = tuple((label, f"{m:.3f}") for label, m in zip(labels, medians, strict=True))
        tables.append(Table("Median parts of the warm run (s)", ("part", "seconds"), rows))
        top = sorted(zip(medians, labels, strict=True), reverse=True)[:3]
        slowest = "; the warm run's largest parts: " + ", ".join(
            f"{label} {seconds:.2f} s" for seconds, label in top
        )
    if costs:
        idle = f"ready guest's QEMU: idle CPU over {IDLE_WINDOW:g} s (% of one core)"
        measurements += [
            Measurement.of("ready guest's QEMU: RSS", [c.rss_mib for c in costs], "MiB"),
            Measurement.of(idle, [c.idle_cpu_percent for c in costs], ""),
        ]
        states = sorted({c.state for c in costs})
        notes.append(f"state of the ready guests measured: {', '.join(states)}")
    notes += [KEPT_RUNNING, REFILL_DELAYED]
    target = Target(
        "cold vm run / warm vm run --pool, under TCG",
        speedup,
        GOAL,
        ">=",
        "x",
        explanation=f"cold {median(cold):.2f} s vs warm {median(warm):.2f} s{slowest}",
    )
    return BenchResult(
        NAME,
        TITLE,
        measurements=tuple(measurements),
        ratios=(Ratio("cold / warm", speedup),),
        targets=(target,),
        notes=tuple(notes),
        tables=tuple(tables),
    )
