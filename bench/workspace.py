"""10. A workspace written onto the work disk before boot vs ``workspace prepare`` over SSH.

Issue #21 item 19: preparing a 400 MB repository over SSH (a tar stream the
guest decrypts and unpacks with an emulated CPU) took 64 s. ``vm run`` and
``vm create --workspace`` now write it into the new work disk from the host
(debugfs, before the first boot). Both paths copy the same generated
repository, in one run, interleaved round by round, in the e2e harness (root
helper + the owner's bangerd in a network namespace, fast-init guests):

- before boot: ``vm create --workspace REPO`` (not started); the time is the
  create's ``workspace`` stage (listing, the host-side state record, the
  debugfs batches, the read-back), from the operation's own events;
- over SSH: ``workspace prepare VM REPO`` on a running VM whose earlier copy was
  removed first (untimed), so each round is a first prepare; the time is the
  operation's, created to finished (lock, connect, transfer, swap, record).

The repository: files of mixed sizes (most small, some of hundreds of KiB, a
few of MiBs) of random bytes in nested directories, committed with git, so
``.git`` holds about as much again: the copy (working tree + ``.git``) is
about 400 MB.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from tests.e2e.harness import Banger, banger_env

from bench.context import BenchContext
from bench.guests import OpTrace, ops_for, trace
from bench.model import BenchResult, Measurement, Ratio, Target
from bench.stats import median, ratio
from bench.timing import interleaved

NAME = "workspace"
TITLE = "10. Workspace onto the work disk before boot vs workspace prepare over SSH (400 MB)"
GOAL = 5.0
MIB = 1024 * 1024
#: The working tree's size; git's objects add about as much (random bytes do not compress).
TREE_BYTES = 200 * MIB
QUICK_TREE_BYTES = 20 * MIB
SSH_VM = "ws-ssh"
REPO_NAME = "bigrepo"
TIMEOUT = 1800.0


def file_sizes(total: int, rng: random.Random) -> list[int]:
    """Mixed sizes adding up to about ``total``: 80% small, 17% medium, 3% large."""
    sizes: list[int] = []
    while sum(sizes) < total:
        pick = rng.random()
        if pick < 0.80:
            sizes.append(rng.randint(512, 16 * 1024))
        elif pick < 0.97:
            sizes.append(rng.randint(64 * 1024, MIB))
        else:
            sizes.append(rng.randint(2 * MIB, 8 * MIB))
    return sizes


def make_repo(b: Banger, path: Path, total: int) -> tuple[int, int]:
    """The repository, owned by the owner and committed as the owner; (files, bytes)."""
    rng = random.Random(19)
    sizes = file_sizes(total, rng)
    for index, size in enumerate(sizes):
        where = path / f"pkg{index % 16}" / f"mod{index % 97}"
        where.mkdir(parents=True, exist_ok=True)
        (where / f"file{index}.dat").write_bytes(rng.randbytes(size))
    subprocess.run(["chown", "-R", f"{b.user.uid}:{b.user.gid}", str(path)], check=True)
    script = (
        "git init -q && git -c user.name=B -c user.email=b@example.test add -A && "
        "git -c user.name=B -c user.email=b@example.test commit -q -m bench"
    )
    subprocess.run(b.as_owner(["env", "-C", str(path), "sh", "-c", script]), check=True,
                   timeout=TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    files = bytes_ = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            files += 1
            bytes_ += (Path(dirpath) / name).lstat().st_size
    return files, bytes_


def last_op(b: Banger, target: str, kind: str) -> OpTrace:
    ops = [op for op in ops_for(b, target) if op["kind"] == kind]
    if not ops or ops[-1].get("state") != "succeeded":
        raise RuntimeError(f"{kind} on {target} did not succeed: {ops[-1] if ops else None}")
    return trace(b, ops[-1])


def run(ctx: BenchContext) -> BenchResult:
    disk_rounds: list[float] = []
    ssh_rounds: list[float] = []
    with banger_env() as b:
        repo = b.user.home / REPO_NAME
        files, size = make_repo(b, repo, QUICK_TREE_BYTES if ctx.quick else TREE_BYTES)
        b.banger("vm", "create", "--name", SSH_VM, "--init", "fast", "--start", timeout=TIMEOUT)
        counter = iter(range(1000))

        def disk_case() -> float:
            name = f"ws-disk-{next(counter)}"
            b.banger("vm", "create", "--name", name, "--init", "fast", "--workspace", str(repo),
                     timeout=TIMEOUT)  # fmt: skip
            try:
                return last_op(b, name, "vm.create").stage("workspace")
            finally:
                b.banger("vm", "rm", name, timeout=300)

        def ssh_case() -> float:
            b.banger("vm", "ssh", SSH_VM, "--", "rm", "-rf", f"/root/{REPO_NAME}", timeout=600)
            b.banger("workspace", "prepare", SSH_VM, str(repo), timeout=TIMEOUT)
            op = last_op(b, SSH_VM, "workspace.prepare")
            return op.finished - op.created

        runs = interleaved(
            {"before boot (vm create --workspace)": disk_case,
             "over SSH (workspace prepare)": ssh_case},
            ctx.rounds(2, 1),
        )  # fmt: skip
        load = os.getloadavg()[0]
    notes = [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
    disk_rounds = runs.samples["before boot (vm create --workspace)"]
    ssh_rounds = runs.samples["over SSH (workspace prepare)"]
    notes.append(
        f"the copy: {files} files, {size / MIB:.0f} MiB (working tree + .git); "
        f"load average {load:.1f} at the end"
    )
    if not disk_rounds or not ssh_rounds:
        return BenchResult(NAME, TITLE, notes=tuple(notes))
    speedup = ratio(median(ssh_rounds), median(disk_rounds))
    explanation = (
        "the host path writes through debugfs (about 70-100 MB/s here, 4 KiB writes); "
        "what remains is the disk write itself"
    )
    return BenchResult(
        NAME,
        TITLE,
        measurements=(
            Measurement.of("over SSH: workspace prepare on a running VM", ssh_rounds),
            Measurement.of("before boot: the create's workspace stage", disk_rounds),
        ),
        ratios=(Ratio("SSH prepare / before boot", speedup),),
        targets=(
            Target(
                "before boot at least 5x faster than the SSH prepare (400 MB)",
                speedup,
                GOAL,
                ">=",
                "x",
                explanation,
            ),
        ),
        notes=tuple(notes),
    )
