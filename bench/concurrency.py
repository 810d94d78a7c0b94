"""5. Concurrency: 1, 4 and 8 simultaneous ``vm create`` and ``vm run --rm -- true``.

Each batch starts N ``banger`` CLIs at once (as the owner, in the e2e
harness's namespace) and waits for all of them. Per-command latency gives
p50/p95; the batch's wall time gives throughput (N / wall); scaling is the
throughput at N over the throughput at 1.

``vm create`` (no boot) exercises the daemon: store transactions, per-VM
locks, root disk and work-disk provisioning. ``vm run`` boots real TCG guests
(fast init, 256 MiB): on 2 cores, guests share the CPUs, so a batch of 8 is
expected to take about 4× a batch of 2 — the daemon's job is to not add to
that and not fail (boot timeouts are per guest, bounded by the harness's
``BANGER_BOOT_TIMEOUT`` with one retry; the batch is bounded too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.e2e.harness import Banger, banger_env

from bench.context import BenchContext
from bench.guests import Timed, finish_cli, start_cli
from bench.model import BenchResult, Measurement, Table
from bench.stats import median, percentile, throughput

NAME = "concurrency"
TITLE = "5. Concurrency (1/4/8 simultaneous vm create and vm run)"
LEVELS = (1, 4, 8)
CREATE_TIMEOUT = 300.0
RUN_TIMEOUT = 900.0
RUN_ARGS = ("vm", "run", "--rm", "--init", "fast", "--memory", "256", "--no-workspace")


@dataclass(frozen=True)
class Batch:
    kind: str
    level: int
    runs: tuple[Timed, ...]

    @property
    def ok(self) -> tuple[Timed, ...]:
        return tuple(r for r in self.runs if r.returncode == 0)

    @property
    def wall(self) -> float:
        return max(r.end for r in self.runs) - min(r.start for r in self.runs)


def batch(b: Banger, kind: str, level: int, argv: Callable[[int], Sequence[str]],
          timeout: float) -> Batch:  # fmt: skip
    """``level`` CLIs started together; each one's own start/end and status."""
    started = [start_cli(b, *argv(i)) for i in range(level)]
    return Batch(kind, level, tuple(finish_cli(at, child, timeout) for at, child in started))


def named(
    head: Sequence[str], names: Sequence[str], tail: Sequence[str]
) -> Callable[[int], Sequence[str]]:
    """The argv of the i-th command of a batch: ``head --name names[i] tail``."""
    return lambda i: (*head, "--name", names[i], *tail)


def remove(b: Banger, names: Sequence[str]) -> None:
    if names:
        b.banger("vm", "rm", "--force", *names, check=False, timeout=300)


def run(ctx: BenchContext) -> BenchResult:
    batches: list[Batch] = []
    run_levels = (1, 2) if ctx.quick else LEVELS
    with banger_env() as b:
        # warm-up: one boot (page cache, bridge, keys), not counted
        b.banger("vm", "run", "--rm", "--init", "fast", "--no-workspace", "--", "true")
        for round_ in range(ctx.rounds(3, 1)):
            for level in LEVELS:
                names = [f"c{level}-{round_}-{i}" for i in range(level)]
                create = named(("vm", "create", "--init", "fast"), names, ())
                batches.append(batch(b, "vm create", level, create, CREATE_TIMEOUT))
                remove(b, names)
        for level in run_levels:
            names = [f"r{level}-{i}" for i in range(level)]
            run_true = named(RUN_ARGS, names, ("--", "true"))
            batches.append(batch(b, "vm run", level, run_true, RUN_TIMEOUT))
            remove(b, names)  # only the ones a failure left behind
    return summarize(batches)


def summarize(batches: Sequence[Batch]) -> BenchResult:
    measurements: list[Measurement] = []
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for kind in dict.fromkeys(b.kind for b in batches):
        base_rate: float | None = None
        for level in dict.fromkeys(b.level for b in batches if b.kind == kind):
            group = [b for b in batches if b.kind == kind and b.level == level]
            latencies = [r.seconds for g in group for r in g.ok]
            failed = [r for g in group for r in g.runs if r.returncode != 0]
            for r in failed[:2]:
                notes.append(f"{kind} ×{level}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
            if not latencies:
                rows.append((kind, str(level), "—", "—", "—", "—", "—", f"{len(failed)} failed"))
                continue
            rates = [throughput(len(g.ok), g.wall) for g in group]
            rate = median(rates)
            base_rate = rate if level == 1 else base_rate
            measurements.append(Measurement.of(f"{kind} ×{level}: latency", latencies))
            measurements.append(Measurement.of(f"{kind} ×{level}: throughput", rates, "ops/s"))
            scaling = f"{rate / base_rate:.2f}×" if base_rate else "—"
            rows.append((
                kind, str(level), f"{median([g.wall for g in group]):.2f} s",
                f"{rate:.2f}", f"{median(latencies):.2f} s", f"{percentile(latencies, 95):.2f} s",
                scaling, f"{len(failed)} failed" if failed else "all ok",
            ))  # fmt: skip
    table = Table(
        "Scaling (throughput relative to one at a time; batches of N started together)",
        ("command", "N", "batch wall", "ops/s", "p50", "p95", "scaling", "status"),
        tuple(rows),
    )
    notes.append(
        "vm run boots TCG guests: each needs a core for most of its boot, so on 2 cores "
        "throughput can at best double from N=1 and latency grows about N/2× beyond N=2"
    )
    return BenchResult(NAME, TITLE, measurements=tuple(measurements), notes=tuple(notes),
                       tables=(table,))  # fmt: skip
