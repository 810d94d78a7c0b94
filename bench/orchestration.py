"""1. Orchestration overhead: ``banger vm run --rm --init fast -- true`` vs a hand-written boot.

Both run in the e2e harness (root helper + the owner's bangerd in a network
namespace, kernel and image from the test caches), interleaved round by round.

The baseline is the physical limit of this machine: the exact QEMU command
line banger recorded for a template VM (its ``vmm_process.argv`` in the
store: same kernel, initramfs, kernel command line, image, work disk
contents, MAC and address), with only the per-VM file paths pointed at a
fresh copy and the two descriptors renumbered. Each round gets a fresh qcow2
overlay of the image and a fresh copy of the template's provisioned work
disk (untimed), a tap opened on the same bridge, then, timed: QEMU started
as the owner, the SSH banner polled every 10 ms, and one ``ssh … true`` with
banger's key and pinned host key.

banger's time is split with the operations' own event timestamps into the
create stages, the delete stages and the CLI's share around them. "Boot" is
the ``launch`` + ``wait_ssh`` stages (QEMU spawned until SSH answers), the
part the baseline also pays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import Banger, banger_env

from banger.disk.cow import Qcow2Overlay
from banger.guest.ssh import SSHTarget, ssh_argv
from banger.images.publish import read_image
from bench.context import BenchContext
from bench.guests import (
    OpTrace,
    banger_paths,
    ops_for,
    owner_dir,
    run_in_netns,
    timed_cli,
    trace,
    vm_row,
)
from bench.model import BenchResult, Measurement, Ratio, Table, Target
from bench.stats import median, ratio
from bench.timing import interleaved

NAME = "orchestration"
TITLE = "1. Orchestration overhead (vm run --rm --init fast -- true vs hand-written boot)"
RATIO_LIMIT = 1.05
OVERHEAD_LIMIT = 0.300
TEMPLATE = "orch-base"
BASE_TAP = "bt-bench0"
BOOT_DEADLINE = 240.0
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
#: banger's create stages, in order; launch + wait_ssh are the boot
CREATE_STAGES = ("resolve", "root_disk", "prepare_work_disk", "network", "launch", "wait_ssh",
                 "running")  # fmt: skip
BOOT_STAGES = ("launch", "wait_ssh")
#: what the parts outside the boot are, and the fixes (none of them in bench/)
EXPLANATION = (
    ". What a hand-written script does not pay: (1) `vm run` is a Python CLI that starts, "
    "follows the create's event stream, "
    "then runs the command through bangerd's exec API on the connection wait_ssh opened "
    "(issue #17: no second SSH handshake), then requests and follows the rm: the CLI rows; "
    "(2) the rm (stop, tap, "
    "files) runs before the command returns — returning the guest's exit status first and "
    "deleting in the daemon afterwards would take it off the wall time; (3) wait_ssh polls "
    "with a back-off growing to 1 s plus a full asyncssh handshake per try "
    "(banger/guest/ssh.py) where the baseline polls every 10 ms: capping the delay at 0.1 s "
    "would save about half a second per boot at TCG boot lengths. The stages banger runs "
    "itself (resolve, root_disk, prepare_work_disk, network) are each tens of ms"
)
DELETE_STAGES = ("stop", "release_tap", "delete")


@dataclass(frozen=True)
class Template:
    """What the baseline copies from a VM banger created and booted once."""

    argv: tuple[str, ...]
    vm_dir: Path
    ip: str
    image_rootfs: Path
    target: SSHTarget


def baseline_argv(template_argv: Sequence[str], vm_dir: Path, workdir: Path, tap_fd: int,
                  qmp_fd: int) -> list[str]:  # fmt: skip
    """banger's recorded QEMU argv with the per-VM files moved to ``workdir``, fds renumbered."""
    out = []
    for arg in template_argv:
        arg = arg.replace(f"{vm_dir}/", f"{workdir}/")
        if arg.startswith("tap,") and ",fd=" in arg:
            arg = _set_option(arg, "fd", str(tap_fd))
        elif arg.startswith("socket,id=qmp,"):
            arg = _set_option(arg, "fd", str(qmp_fd))
        out.append(arg)
    return out


def _set_option(arg: str, key: str, value: str) -> str:
    parts = arg.split(",")
    return ",".join(f"{key}={value}" if p.startswith(f"{key}=") else p for p in parts)


def make_template(b: Banger) -> Template:
    b.banger("vm", "create", "--name", TEMPLATE, "--init", "fast", "--start", timeout=600)
    b.banger("vm", "stop", TEMPLATE, timeout=120)
    row = vm_row(b, TEMPLATE)
    paths = banger_paths(b)
    image = read_image(paths.image_dir(row["image_id"]))
    return Template(
        argv=tuple(row["config"]["vmm_process"]["argv"]),
        vm_dir=paths.vm_dir(row["id"]),
        ip=str(row["ip"]),
        image_rootfs=image.rootfs,
        target=SSHTarget(str(row["ip"]), paths.known_hosts, paths.ssh_key),
    )


def bridge_of(b: Banger) -> str:
    links = json.loads(b.host("ip", "-j", "link", "show", "type", "bridge").stdout or "[]")
    if not links:
        raise RuntimeError("no bridge in the namespace (banger creates it at the first start)")
    return str(links[0]["ifname"])


def open_tap(name: str) -> int:
    """What the helper does (same flags): a tap in this thread's namespace, as an fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def wait_banner(host: str, deadline: float) -> None:
    """Poll port 22 until sshd sends its banner (a 10 ms period: the fastest honest wait)."""
    while True:
        try:
            with socket.create_connection((host, 22), timeout=1.0) as sock:
                sock.settimeout(5.0)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SSH banner from {host}")
        time.sleep(0.01)


@dataclass(frozen=True)
class BaselineRound:
    total: float
    banner: float

    @property
    def ssh(self) -> float:
        return self.total - self.banner


def baseline_round(b: Banger, template: Template, bridge: str) -> BaselineRound:
    workdir = b.state_dir / "bench-base"
    shutil.rmtree(workdir, ignore_errors=True)
    owner_dir(b, workdir.name)
    root = Qcow2Overlay().create(template.image_rootfs, workdir)
    work = workdir / "work.ext4"
    subprocess.run(["cp", "--sparse=always", str(template.vm_dir / "work.ext4"), str(work)],
                   check=True)  # fmt: skip
    for path in (root.path, work):
        os.chown(path, b.user.uid, b.user.gid)
    log = open(workdir / "vmm.log", "wb")  # noqa: SIM115 - closed in finally

    def boot() -> BaselineRound:
        tap_fd = open_tap(BASE_TAP)
        qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        child: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run(["ip", "link", "set", BASE_TAP, "master", bridge, "up"], check=True)
            qmp.bind(str(workdir / "qmp.sock"))
            qmp.listen(1)
            argv = baseline_argv(template.argv, template.vm_dir, workdir, tap_fd, qmp.fileno())
            start = time.perf_counter()
            child = subprocess.Popen(
                argv,
                pass_fds=(tap_fd, qmp.fileno()),
                user=b.user.uid,
                group=b.user.gid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            wait_banner(template.ip, time.monotonic() + BOOT_DEADLINE)
            banner = time.perf_counter()
            ssh = subprocess.run(ssh_argv(template.target, ["true"]), stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=60, check=False)  # fmt: skip
            end = time.perf_counter()
            if ssh.returncode != 0:
                raise RuntimeError(f"baseline ssh failed: {ssh.stderr.decode()[-300:]}")
            return BaselineRound(end - start, banner - start)
        finally:
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            os.close(tap_fd)
            qmp.close()

    try:
        return run_in_netns(b.ns.name, boot)
    finally:
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class BangerRound:
    total: float
    #: where the time went, in order (seconds)
    parts: tuple[tuple[str, float], ...]

    @property
    def boot(self) -> float:
        return sum(s for name, s in self.parts if name.removeprefix("create: ") in BOOT_STAGES)


def breakdown(start: float, end: float, create: OpTrace, delete: OpTrace) -> BangerRound:
    """The run's wall time cut at the operations' timestamps (pure; tested)."""
    parts: list[tuple[str, float]] = [("CLI: start, request the create", create.created - start)]
    parts += [(f"create: {stage}", create.stage(stage)) for stage in CREATE_STAGES]
    parts.append(("CLI: follow ends, `true` over the exec API, request the rm",
                  delete.created - create.finished))  # fmt: skip
    parts += [(f"rm: {stage}", delete.stage(stage)) for stage in DELETE_STAGES]
    parts.append(("CLI: follow the rm, exit", end - delete.finished))
    return BangerRound(end - start, tuple(parts))


def banger_round(b: Banger, index: int) -> BangerRound:
    name = f"orch-{index}"
    run = timed_cli(b, "vm", "run", "--rm", "--init", "fast", "--no-workspace", "--name", name,
                    "--", "true", timeout=BOOT_DEADLINE * 2)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"vm run exited {run.returncode}: {run.stderr[-400:]}")
    ops = ops_for(b, name)
    create = next(trace(b, op) for op in ops if op["kind"] == "vm.create")
    delete = next(trace(b, op) for op in ops if op["kind"] == "vm.rm")
    return breakdown(run.start, run.end, create, delete)


def run(ctx: BenchContext) -> BenchResult:
    banger_rounds: list[BangerRound] = []
    base_rounds: list[BaselineRound] = []
    with banger_env() as b:
        template = make_template(b)  # also the warm-up boot (page cache, bridge, keys)
        bridge = bridge_of(b)
        counter = iter(range(1000))

        def banger_case() -> float:
            banger_rounds.append(banger_round(b, next(counter)))
            return banger_rounds[-1].total

        def base_case() -> float:
            base_rounds.append(baseline_round(b, template, bridge))
            return base_rounds[-1].total

        runs = interleaved(
            {"hand-written boot (baseline)": base_case, "banger vm run --rm": banger_case},
            ctx.rounds(5, 1),
        )
    notes = [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
    if not banger_rounds or not base_rounds:
        return BenchResult(NAME, TITLE, notes=tuple(notes) or ("no round finished",))
    return summarize(banger_rounds, base_rounds, notes)


def summarize(banger_rounds: Sequence[BangerRound], base_rounds: Sequence[BaselineRound],
              notes: list[str]) -> BenchResult:  # fmt: skip
    total = median([r.total for r in banger_rounds])
    base = median([r.total for r in base_rounds])
    boot = median([r.boot for r in banger_rounds])
    ssh = median([r.ssh for r in base_rounds])
    outside = median([r.total - r.boot for r in banger_rounds])
    own = outside - ssh
    b_tot = [r.total for r in banger_rounds]
    base_tot = [r.total for r in base_rounds]
    measurements = [
        Measurement.of("hand-written: QEMU start → `ssh true` done", base_tot),
        Measurement.of("  of which: QEMU start → SSH banner", [r.banner for r in base_rounds]),
        Measurement.of("  of which: one `ssh true`", [r.ssh for r in base_rounds]),
        Measurement.of("banger vm run --rm --init fast -- true", b_tot),
        Measurement.of("  of which: boot (launch + wait_ssh)", [r.boot for r in banger_rounds]),
        Measurement.of("  of which: outside the boot", [r.total - r.boot for r in banger_rounds]),
    ]  # fmt: skip
    rows = []
    for index, (part, _) in enumerate(banger_rounds[0].parts):
        values = [r.parts[index][1] for r in banger_rounds]
        rows.append((part, f"{median(values) * 1000:.0f} ms"))
    explanation = _explanation(banger_rounds, base) + EXPLANATION
    targets = (
        Target("vm run / hand-written boot", ratio(total, base), RATIO_LIMIT, "<=", "x",
               explanation),
        Target("banger's own time outside the boot (minus the `ssh true` both pay)", own,
               OVERHEAD_LIMIT, "<=", "s", explanation),
    )  # fmt: skip
    notes.append(
        f"boot inside banger (launch + wait_ssh) {boot:.2f} s vs the baseline's QEMU start → "
        f"banner {median([r.banner for r in base_rounds]):.2f} s; outside the boot "
        f"{outside * 1000:.0f} ms, of which one `ssh true` ≈ {ssh * 1000:.0f} ms"
    )
    return BenchResult(
        NAME,
        TITLE,
        measurements=tuple(measurements),
        ratios=(Ratio("vm run / hand-written boot", ratio(total, base)),),
        targets=targets,
        notes=tuple(notes),
        tables=(
            Table(
                f"Where `vm run --rm` goes (median of {len(banger_rounds)} rounds)",
                ("part", "median"),
                tuple(rows),
            ),
        ),
    )


def _explanation(banger_rounds: Sequence[BangerRound], base: float) -> str:
    parts: dict[str, list[float]] = {}
    for r in banger_rounds:
        for name, seconds in r.parts:
            if name.removeprefix("create: ") not in BOOT_STAGES:
                parts.setdefault(name, []).append(seconds)
    top = sorted(((median(v), k) for k, v in parts.items()), reverse=True)[:3]
    listed = "; ".join(f"{k} {s * 1000:.0f} ms" for s, k in top)
    return f"largest parts outside the boot: {listed} (table below)"
