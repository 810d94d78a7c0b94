"""3. Work-disk provisioning: ``[[file_sync]]`` through the batched ext4 toolkit.

Three ways to put the same tree on a fresh work disk, timed per round on a new
disk (the disk's creation is not timed):

- **batched**: what banger does: ``plan_file_sync`` then ``provision_work_disk``
  (one debugfs batch, plus its read-before and verify-after runs);
- **per-file debugfs**: one ``debugfs -w`` process per directory and per file
  (write + mode), the obvious unbatched version;
- **loop mount + cp**: mount the image as root, ``cp -a``, unmount: the baseline
  a user with root would write.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from banger import proc
from banger.config.file_sync import FileSync
from banger.disk.sync_plan import SyncPlan, plan_file_sync
from banger.disk.workdisk import HostKey, Provisioning, provision_work_disk
from bench.context import BenchContext
from bench.model import BenchResult, Measurement, Ratio, Target
from bench.stats import median, ratio
from bench.timing import Case, interleaved, stopwatch

NAME = "provisioning"
TITLE = "3. Work-disk provisioning ([[file_sync]])"
MIB = 1024 * 1024
FILES_PER_DIR = 100
SMALL_FILE_BYTES = 2048
BATCHED, PER_FILE, MOUNTED = "batched", "per-file debugfs", "loop mount + cp"
DEBUGFS_ENV = {"DEBUGFS_PAGER": "__none__", "PAGER": "cat"}


@dataclass(frozen=True)
class Tree:
    """A host tree under a fake home, and the ``[[file_sync]]`` entry naming it."""

    home: Path
    root: Path
    guest: str
    files: int
    disk_mib: int

    def entry(self) -> FileSync:
        raw = {"host": str(self.root), "guest": f"~/{self.guest}"}
        return FileSync.model_validate(raw, context={"home": self.home})


def make_small_files(home: Path, count: int) -> Tree:
    """``count`` files of 2 KiB, 100 per directory (a dotfiles/config-like tree)."""
    root = home / f"tree{count}"
    for index in range(count):
        sub = root / f"d{index // FILES_PER_DIR:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index:05d}.txt").write_bytes(os.urandom(SMALL_FILE_BYTES))
    return Tree(home, root, f"sync{count}", count, disk_mib=256)


def make_big_file(home: Path, size_mib: int) -> Tree:
    root = home / "big"
    root.mkdir()
    with open(root / "blob.bin", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    return Tree(home, root, "bigsync", 1, disk_mib=size_mib * 2 + 64)


def fresh_disk(path: Path, size_mib: int) -> Path:
    path.unlink(missing_ok=True)
    os.truncate(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600), 0)
    os.truncate(path, size_mib * MIB)
    proc.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", str(path)])
    return path


def host_key(directory: Path) -> HostKey:
    private = directory / "ssh_host_ed25519_key"
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)])
    return HostKey(private, private.with_name(private.name + ".pub"))


def provision_batched(disk: Path, tree: Tree, key: HostKey) -> SyncPlan:
    plan = plan_file_sync([tree.entry()], home=tree.home)
    provision_work_disk(
        disk, Provisioning("ssh-ed25519 AAAA bench", key, dirs=plan.dirs, files=plan.files)
    )
    return plan


def provision_per_file(disk: Path, tree: Tree) -> None:
    """One debugfs process per directory and per file, as a loop over the tree would."""
    plan = plan_file_sync([tree.entry()], home=tree.home)
    for d in plan.dirs:
        _debugfs_one(disk, f'mkdir "/{d.guest_rel_path}"\n')
    for f in plan.files:
        dest = f"/{f.guest_rel_path}"
        script = f'write "{f.host_path}" "{dest}"\nsif "{dest}" mode 0{0o100000 | f.mode:o}\n'
        _debugfs_one(disk, script)


def _debugfs_one(disk: Path, script: str) -> None:
    proc.run(["debugfs", "-w", "-f", "-", str(disk)], input=script.encode(), env=DEBUGFS_ENV)


def provision_mounted(disk: Path, tree: Tree, mountpoint: Path) -> None:
    """Loop mount + ``cp -a`` + unmount (needs root and loop devices)."""
    proc.run(["mount", "-o", "loop", str(disk), str(mountpoint)])
    try:
        proc.run(["cp", "-a", "--", str(tree.root), str(mountpoint / tree.guest)])
    finally:
        proc.run(["umount", str(mountpoint)])


def loop_mount_usable(scratch: Path) -> str | None:
    """None when a loop mount works here; otherwise why not."""
    if os.geteuid() != 0:
        return "needs root"
    disk = fresh_disk(scratch / "probe.img", 8)
    mnt = scratch / "probe.mnt"
    mnt.mkdir()
    try:
        proc.run(["mount", "-o", "loop", str(disk), str(mnt)])
        proc.run(["umount", str(mnt)])
        return None
    except Exception as exc:  # any failure is the answer
        return str(exc)
    finally:
        mnt.rmdir()
        disk.unlink(missing_ok=True)


def run(ctx: BenchContext) -> BenchResult:
    home = ctx.workdir / "home"
    home.mkdir()
    key = host_key(ctx.workdir)
    mnt = ctx.workdir / "mnt"
    mnt.mkdir()
    mount_problem = loop_mount_usable(ctx.workdir)
    counts = (10, 100) if ctx.quick else (10, 100, 1000)
    trees = [make_small_files(home, n) for n in counts]
    trees.append(make_big_file(home, 8 if ctx.quick else 100))
    disk = ctx.workdir / "work.ext4"

    def case_batched(tree: Tree) -> float:
        fresh_disk(disk, tree.disk_mib)
        with stopwatch() as lap:
            plan = provision_batched(disk, tree, key)
        if len(plan.files) != tree.files:
            raise AssertionError(f"planned {len(plan.files)} files, expected {tree.files}")
        return lap.seconds

    def case_per_file(tree: Tree) -> float:
        fresh_disk(disk, tree.disk_mib)
        with stopwatch() as lap:
            provision_per_file(disk, tree)
        return lap.seconds

    def case_mounted(tree: Tree) -> float:
        fresh_disk(disk, tree.disk_mib)
        with stopwatch() as lap:
            provision_mounted(disk, tree, mnt)
        return lap.seconds

    measurements: list[Measurement] = []
    ratios: list[Ratio] = []
    notes: list[str] = []
    medians: dict[tuple[str, int], float] = {}
    for tree in trees:
        label = _label(tree, ctx.quick)
        cases: dict[str, Case] = {BATCHED: partial(case_batched, tree)}
        if tree.root.name != "big":  # one file: per-file and batched make the same calls
            cases[PER_FILE] = partial(case_per_file, tree)
        if mount_problem is None:
            cases[MOUNTED] = partial(case_mounted, tree)
        runs = interleaved(
            cases, ctx.rounds(3 if tree.files >= 1000 or tree.root.name == "big" else 5)
        )
        for case, error in runs.failures.items():
            notes.append(f"{label}, {case} FAILED: {error[:200]}{_diagnosis(error)}")
        for case, values in runs.samples.items():
            if runs.ok(case):
                measurements.append(Measurement.of(f"{label}: {case}", values))
                medians[(case, tree.files)] = median(values)
        if runs.ok(BATCHED) and runs.ok(PER_FILE):
            value = ratio(medians[(PER_FILE, tree.files)], medians[(BATCHED, tree.files)])
            ratios.append(Ratio(f"{label}: per-file / batched", value))
        if runs.ok(BATCHED) and runs.ok(MOUNTED):
            value = ratio(medians[(BATCHED, tree.files)], medians[(MOUNTED, tree.files)])
            ratios.append(Ratio(f"{label}: batched / loop mount", value))
    notes.append(
        "batched = plan_file_sync + provision_work_disk: one debugfs write batch plus the "
        f"read-before and verify-after runs; files are {SMALL_FILE_BYTES} B, "
        f"{FILES_PER_DIR} per directory"
    )
    if mount_problem is not None:
        notes.append(f"loop mount + cp not measured: {mount_problem}")
    targets = () if ctx.quick else _targets(medians)
    return BenchResult(NAME, TITLE, tuple(measurements), tuple(ratios), targets, tuple(notes))


def _diagnosis(error: str) -> str:
    if "Command not found banger-step" not in error:
        return ""
    return (
        " (banger.disk.ext4 reads debugfs's exit status, which is the count of the batch's "
        "marker commands mod 256, as a failure when it lands in 126-255: any batch of about "
        "30 files or more can hit it; reported for a fix)"
    )


def _label(tree: Tree, quick: bool) -> str:
    if tree.root.name == "big":
        return f"one {tree.disk_mib // 2 - 32} MiB file"
    return f"{tree.files} files"


def _targets(medians: dict[tuple[str, int], float]) -> tuple[Target, ...]:
    batched = medians.get((BATCHED, 1000), math.inf)
    per_file = medians.get((PER_FILE, 1000), math.nan)
    broken = "the batched run failed (see the FAILED note)" if math.isinf(batched) else ""
    return (
        Target(
            "1,000 files, batched",
            batched,
            2.0,
            "<=",
            "s",
            explanation=broken
            or "debugfs copies through libext2fs block by block without the page cache; "
            "the batch is already one process, so this is the toolkit's floor here",
        ),
        Target(
            "1,000 files: per-file / batched",
            ratio(per_file, batched) if not broken else 0.0,
            10.0,
            ">=",
            "x",
            explanation=broken
            or "a debugfs start is cheap next to the per-file write cost on this machine",
        ),
    )
