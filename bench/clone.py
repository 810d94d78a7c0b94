"""2. Root-disk clone cost vs image size, for each copy-on-write strategy.

Two sparse images, 1 GiB and 8 GiB, hold the same 256 MiB of file data (made
with ``mkfs.ext4 -d``, as the image pipeline does): a real rootfs's data does
not grow with the size of its filesystem, so any cost that does is the
strategy's own. Each round creates a VM root disk with the strategy from
:mod:`banger.disk.cow` and removes it (removal not timed).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from banger import hostinfo, proc
from banger.disk.cow import CowStrategy, Qcow2Overlay, SparseCopy
from bench.context import BenchContext
from bench.model import BenchResult, Measurement, Ratio, Target
from bench.stats import median, ratio
from bench.timing import Case, Runs, interleaved, stopwatch

NAME = "clone"
TITLE = "2. Root-disk clone cost vs image size"
MIB = 1024 * 1024
GIB = 1024 * MIB
#: strategies that copy: their cost follows the data, so no size target applies
COPYING = frozenset({SparseCopy.name})


def make_data_tree(root: Path, total_mib: int, file_mib: int = 4) -> Path:
    """Incompressible files adding up to ``total_mib`` (no zero blocks to skip)."""
    root.mkdir()
    for index in range(total_mib // file_mib):
        (root / f"blob{index:04d}.bin").write_bytes(os.urandom(file_mib * MIB))
    return root


def make_image(path: Path, size: int, data: Path) -> Path:
    """A sparse ext4 image of ``size`` bytes holding ``data`` (``mkfs.ext4 -d``, no mount)."""
    with open(path, "wb") as f:
        f.truncate(size)
    proc.run(["mkfs.ext4", "-q", "-F", "-d", str(data), str(path)])
    return path


def allocated_mib(path: Path) -> float:
    return path.stat().st_blocks * 512 / MIB


def unavailable_strategies(state_dir: Path) -> dict[str, str]:
    """Strategies that cannot run here, with the reason (probed, never guessed)."""
    reasons: dict[str, str] = {}
    reflink = hostinfo.reflink_supported(state_dir)
    if not reflink:
        reasons["reflink"] = reflink.detail
    dm = hostinfo.device_mapper_usable()
    loops = hostinfo.loop_devices_available()
    if not dm:
        reasons["dm-snapshot"] = dm.detail
    elif not loops:
        reasons["dm-snapshot"] = loops.detail
    else:
        reasons["dm-snapshot"] = (
            "device-mapper works here, but the helper operation that sets the snapshot "
            "up is not written yet (banger.disk.cow.DmSnapshot)"
        )
    return reasons


def clone_once(strategy: CowStrategy, base: Path, vm_dir: Path, sizes: list[float]) -> float:
    vm_dir.mkdir(exist_ok=True)
    with stopwatch() as lap:
        disk = strategy.create(base, vm_dir)
    sizes.append(allocated_mib(disk.path))
    strategy.remove(disk)
    return lap.seconds


def run(ctx: BenchContext) -> BenchResult:
    data_mib = 32 if ctx.quick else 256
    sizes = {"1 GiB": 1 * GIB, "8 GiB": 8 * GIB}
    data = make_data_tree(ctx.workdir / "data", data_mib)
    images = {label: make_image(ctx.workdir / f"img-{label[0]}.ext4", size, data)
              for label, size in sizes.items()}  # fmt: skip
    strategies: list[CowStrategy] = [Qcow2Overlay(), SparseCopy()]
    #: cheap strategies get more rounds: their few milliseconds are mostly noise
    rounds = {Qcow2Overlay.name: ctx.rounds(30, 2), SparseCopy.name: ctx.rounds(8, 2)}
    allocated: dict[str, list[float]] = {}
    runs = Runs({}, {})
    for strategy in strategies:
        cases: dict[str, Case] = {}
        for label, image in images.items():
            key = f"{strategy.name}, {label}"
            allocated[key] = []
            vm_dir = ctx.workdir / f"vm-{strategy.name}-{label[0]}"
            cases[key] = partial(clone_once, strategy, image, vm_dir, allocated[key])
        done = interleaved(cases, rounds[strategy.name], warmup=0 if ctx.quick else 1)
        runs.samples.update(done.samples)
        runs.failures.update(done.failures)
    measurements = [Measurement.of(k, v) for k, v in runs.samples.items() if runs.ok(k)]
    measurements += [
        Measurement.of(f"{k}: disk space used", [median(v)], "MiB")
        for k, v in allocated.items()
        if v
    ]
    ratios: list[Ratio] = []
    targets: list[Target] = []
    for strategy in strategies:
        small, big = f"{strategy.name}, 1 GiB", f"{strategy.name}, 8 GiB"
        if not (runs.ok(small) and runs.ok(big)):
            continue
        value = ratio(median(runs.samples[big]), median(runs.samples[small]))
        ratios.append(Ratio(f"{strategy.name}: 8 GiB / 1 GiB", value))
        if strategy.name not in COPYING:
            targets.append(
                Target(
                    f"{strategy.name}: 8 GiB / 1 GiB",
                    value,
                    1.2,
                    "<=",
                    "x",
                    explanation="qemu-img writes a header and an L1 table of one 8-byte entry "
                    "per 512 MiB of virtual size: nothing that grows measurably, so a miss "
                    "is process-start noise around a few milliseconds",
                )
            )
    notes = [
        f"both images hold the same {data_mib} MiB of file data; "
        "the two sizes are interleaved round by round, one warm-up round dropped",
        "copy = cp --sparse=always: its cost follows the data, not the image size, "
        "so no size target applies to it",
    ]
    notes += [f"{case} FAILED: {error[:200]}" for case, error in runs.failures.items()]
    notes += [f"{name}: not available here: {why}" for name, why in
              unavailable_strategies(ctx.workdir).items()]  # fmt: skip
    return BenchResult(
        NAME, TITLE, tuple(measurements), tuple(ratios), tuple(targets), tuple(notes)
    )
