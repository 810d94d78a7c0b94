"""4. CLI latency: ``banger vm list --json`` against a real bangerd, vs ``python -c pass``.

The floor is the venv's interpreter starting and exiting: no Python CLI can be
faster. Two daemons run side by side, one with an empty store and one with 100
VM records inserted through :class:`banger.store.Store`, so both cases can be
interleaved round by round. The import-time breakdown comes from one run under
``-X importtime``.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from tests.integration.bangerd_harness import BANGER, home_env, running_daemon

from banger import proc
from banger.paths import Paths
from banger.store import Store
from banger.store.records import VMState
from bench.context import BenchContext
from bench.importtime import by_package, first_importers, parse_importtime, total_us
from bench.model import BenchResult, Measurement, Ratio, Table, Target
from bench.stats import median, ratio
from bench.timing import Case, interleaved, timed

NAME = "cli_latency"
TITLE = "4. CLI latency (vm list --json)"
PYTHON = Path(sys.executable)
WALL_LIMIT = 0.150
ABOVE_FLOOR_LIMIT = 0.100
LIST = ("vm", "list", "--json")


def seed_vms(home: Path, count: int) -> None:
    paths = Paths.from_env({"BANGER_HOME": str(home)})
    with Store.open(paths.db) as store:
        for index in range(count):
            store.create_vm(
                name=f"bench-{index:03d}",
                image_id=None,
                kernel_id=None,
                vmm="qemu",
                init_mode="fast",
                vcpus=1,
                memory_mib=512,
                work_disk_size=1 << 30,
                state=VMState.STOPPED,
            )


def run_argv(argv: list[str], env: dict[str, str] | None = None) -> str:
    return proc.run(argv, env=env).out


def listed(home: Path) -> int:
    return len(json.loads(run_argv([str(BANGER), *LIST], home_env(home))))


def import_breakdown(home: Path) -> tuple[Table, Table, float]:
    result = proc.run([str(PYTHON), "-X", "importtime", str(BANGER), *LIST], env=home_env(home))
    entries = parse_importtime(result.err)
    importers = first_importers(entries)
    packages = by_package(entries)[:10]
    pkg_rows = tuple(
        (name, f"{us / 1000:.1f} ms", str(count), importers.get(name, "—"))
        for name, us, count in packages
    )
    heavy = sorted(
        (e for e in entries if e.name.startswith("banger") and e.depth <= 3),
        key=lambda e: -e.cumulative_us,
    )[:10]
    mod_rows = tuple((e.name, f"{e.cumulative_us / 1000:.1f} ms", str(e.depth)) for e in heavy)
    return (
        Table(
            "Import time by package (self time summed), `-X importtime`",
            ("package", "self time", "modules", "first imported by"),
            pkg_rows,
        ),
        Table(
            "Heaviest banger modules (cumulative, includes what they import)",
            ("module", "cumulative", "depth"),
            mod_rows,
        ),
        total_us(entries) / 1e6,
    )


#: Runs in a fresh interpreter: where one ``vm list`` goes, phase by phase (ms).
_PHASES = """
import json, time
t = [time.perf_counter()]
import banger.cli.main
t.append(time.perf_counter())
from banger.client import BangerClient
from banger.paths import Paths
t.append(time.perf_counter())
client = BangerClient(Paths.from_env())
t.append(time.perf_counter())
vms = client.get_json("/v1/vms")
t.append(time.perf_counter())
text = json.dumps(vms, indent=2)
t.append(time.perf_counter())
print(json.dumps([round((b - a) * 1000, 2) for a, b in zip(t, t[1:])]))
"""
PHASE_NAMES = (
    "import banger.cli.main (click, logging, every command module)",
    "import banger.client (banger.http_unix; models stay unloaded)",
    "construct the client",
    "request (connect, daemon answers, JSON decoded)",
    "render JSON",
)


def phase_breakdown(home: Path, rounds: int) -> Table:
    """Median per phase over ``rounds`` fresh interpreters."""
    per_phase: list[list[float]] = [[] for _ in PHASE_NAMES]
    for _ in range(rounds):
        values = json.loads(run_argv([str(PYTHON), "-c", _PHASES], home_env(home)))
        for bucket, value in zip(per_phase, values, strict=True):
            bucket.append(float(value))
    rows = tuple(
        (name, f"{median(values):.1f} ms")
        for name, values in zip(PHASE_NAMES, per_phase, strict=True)
    )
    return Table(
        f"Where one `vm list` goes (100 VMs, median of {rounds} fresh interpreters)",
        ("phase", "median"),
        rows,
    )


def run(ctx: BenchContext) -> BenchResult:
    homes = {n: ctx.workdir / f"h{n}" for n in (0, 100)}
    for count, home in homes.items():
        home.mkdir()
        seed_vms(home, count)
    with ExitStack() as stack:
        for home in homes.values():
            stack.enter_context(running_daemon(home))
        for count, home in homes.items():
            if listed(home) != count:
                raise AssertionError(f"vm list shows {listed(home)} VMs, expected {count}")
        cases: dict[str, Case] = {
            "python -c pass": partial(timed, partial(run_argv, [str(PYTHON), "-c", "pass"]))
        }
        for count, home in homes.items():
            argv = [str(BANGER), *LIST]
            cases[f"vm list --json, {count} VMs"] = partial(
                timed, partial(run_argv, argv, home_env(home))
            )
        runs = interleaved(cases, ctx.rounds(20, 2), warmup=2)
        packages, modules, imports = import_breakdown(homes[100])
        phases = phase_breakdown(homes[100], ctx.rounds(7, 1))
    measurements = [Measurement.of(k, v) for k, v in runs.samples.items() if runs.ok(k)]
    measurements.append(Measurement.of("imports alone (sum of -X importtime)", [imports]))
    floor = median(runs.samples["python -c pass"])
    ratios, targets = [], []
    for count in homes:
        wall = median(runs.samples[f"vm list --json, {count} VMs"])
        ratios.append(Ratio(f"vm list ({count} VMs) / python -c pass", ratio(wall, floor)))
        targets.append(
            Target(
                f"vm list, {count} VMs: wall",
                wall,
                WALL_LIMIT,
                "<=",
                "s",
                explanation=_explanation(imports),
            )
        )
        targets.append(
            Target(
                f"vm list, {count} VMs: above the floor",
                wall - floor,
                ABOVE_FLOOR_LIMIT,
                "<=",
                "s",
                explanation=_explanation(imports),
            )
        )
    notes = [f"{case} FAILED: {error[:200]}" for case, error in runs.failures.items()]
    return BenchResult(
        NAME,
        TITLE,
        tuple(measurements),
        tuple(ratios),
        tuple(targets),
        tuple(notes),
        tables=(phases, packages, modules),
    )


def _explanation(imports: float) -> str:
    return (
        f"imports take {imports * 1000:.0f} ms of it (tables below). `vm list --json` loads "
        "neither httpx nor pydantic (the daemon's JSON is passed through), command groups load "
        "only when named (cli/main.py LazyGroup), and the transport is banger.http_unix, a "
        "minimal HTTP/1.1 exchange, instead of http.client (whose ssl and email imports cost "
        "20-30 ms). What is left is mostly click itself (~40 ms of imports)"
    )
