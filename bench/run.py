"""Run the benchmarks: ``python -m bench.run [NAME ...] [--quick] [--list]``.

Each benchmark is a module with ``NAME``, ``TITLE`` and ``run(ctx) -> BenchResult``.
One that fails is reported as not run (with the error), the others still run.
Results go to ``bench/results/latest.json`` and ``latest.md``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench.context import BenchContext
from bench.machine import this_machine
from bench.model import BenchResult
from bench.report import write_results

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: run order: cheap and independent first, the VM-booting ones last
BENCHMARKS: dict[str, str] = {
    "provisioning": "bench.provisioning",
    "clone": "bench.clone",
    "cli_latency": "bench.cli_latency",
    "orchestration": "bench.orchestration",
    "exec_latency": "bench.exec_latency",
    "workspace": "bench.workspace",
    "fork": "bench.fork",
    "pool": "bench.pool",
    "concurrency": "bench.concurrency",
    "footprint": "bench.footprint",
    "images": "bench.images",
    "boot": "bench.boot",
}


#: titles of benchmarks whose module is not written yet (so the report still lists them)
PENDING_TITLES = {
    "orchestration": "1. Orchestration overhead (vm run --rm -- true vs hand-written boot)",
    "concurrency": "5. Concurrency (1/4/8 simultaneous vm create and vm run)",
    "images": "7. Image pipeline (OCI pull vs skopeo + tar + mkfs.ext4 -d; distro build)",
}


def select(names: Sequence[str]) -> list[str]:
    """The benchmarks to run, in run order; all of them when ``names`` is empty."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from: {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if not names or n in names]


def _module(name: str) -> ModuleType | None:
    """The benchmark's module; None while it is not written yet."""
    try:
        return importlib.import_module(BENCHMARKS[name])
    except ModuleNotFoundError as exc:
        if exc.name != BENCHMARKS[name]:
            raise
        return None


def run_one(name: str, *, quick: bool, scratch_root: Path) -> BenchResult:
    module = _module(name)
    if module is None:
        return BenchResult.skip(name, PENDING_TITLES.get(name, name), "not written yet")
    title: str = getattr(module, "TITLE", name)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=scratch_root))
    start = time.perf_counter()
    try:
        result: BenchResult = module.run(BenchContext(workdir=workdir, quick=quick))
    except Exception as exc:  # one broken benchmark must not lose the others' results
        traceback.print_exc(file=sys.stderr)
        result = BenchResult.skip(name, title, f"failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _with_seconds(result, time.perf_counter() - start)


def _with_seconds(result: BenchResult, seconds: float) -> BenchResult:
    from dataclasses import replace

    return replace(result, seconds=seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all)")
    parser.add_argument("--quick", action="store_true", help="one round, small inputs")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    if args.list:
        for name in BENCHMARKS:
            title = getattr(
                _module(name), "TITLE", f"{PENDING_TITLES.get(name, name)} (not written yet)"
            )
            print(f"{name:14} {title}")
        return 0
    names = select(args.names)
    machine = this_machine()
    when = datetime.now(UTC)
    # scratch on the disk the state dir would use, not tmpfs: disk costs are the point
    scratch_root = Path(os.environ.get("BANGER_BENCH_SCRATCH", "/var/tmp"))
    results: list[BenchResult] = []
    for name in names:
        print(f"bench: {name} …", file=sys.stderr, flush=True)
        result = run_one(name, quick=args.quick, scratch_root=scratch_root)
        state = f"not run ({result.skipped})" if result.skipped else "done"
        print(f"bench: {name} {state} in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        results.append(result)
    json_path, md_path = write_results(args.output, results, machine, when)
    print(f"bench: wrote {md_path} and {json_path}", file=sys.stderr)
    missed = [f"{r.name}: {t.description}" for r in results for t in r.missed]
    for line in missed:
        print(f"bench: target missed — {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
