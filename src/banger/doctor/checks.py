"""``banger doctor``'s checks, in the order they are shown, and the runner.

A check is a small function from :class:`DoctorContext` (host facts gathered
once, cheaply) to a :class:`CheckResult`. ``fail`` means banger cannot work as
configured here; ``warn`` means it works with a fallback or without a feature
(and says which). The checks run concurrently because several start a tool to
ask its version; every command has a bounded timeout.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from banger import hostinfo
from banger.doctor import dns, reconcile, taps
from banger.doctor.model import Check, CheckResult, DoctorContext, Status
from banger.errors import BangerError, CommandError
from banger.paths import Paths, check_private_dir
from banger.proc import run, which
from banger.system.probes import probe_daemon, probe_helper

#: Seconds any one ``--version`` may take.
VERSION_TIMEOUT = 5.0

FIRECRACKER_RELEASES = "https://github.com/firecracker-microvm/firecracker/releases"


# -- versions of tools -------------------------------------------------------------

_VERSION = re.compile(r"(?<![\w.])v?(\d+(?:\.\d+)+(?:p\d+)?)")


def version_from_output(text: str) -> str | None:
    """The first version number in a tool's ``--version`` text.

    Handles the shapes seen in the wild: ``QEMU emulator version 7.2.22``,
    ``nftables v1.0.6``, ``ip utility, iproute2-6.1.0``, ``OpenSSH_9.2p1``,
    ``mke2fs 1.47.0 (5-Feb-2023)``, ``Firecracker v1.7.0``.
    """
    for line in text.splitlines():
        # iproute2 and OpenSSH glue the version to the name with - or _.
        match = _VERSION.search(line.replace("-", " ").replace("_", " "))
        if match:
            return match.group(1)
    return None


def tool_version(path: str, args: tuple[str, ...]) -> str | None:
    """Ask a tool its version; None when it does not say (or does not answer)."""
    try:
        result = run([path, *args], timeout=VERSION_TIMEOUT, check=False)
    except CommandError:
        return None
    return version_from_output(result.out + "\n" + result.err)


@dataclass(frozen=True)
class ToolSpec:
    """A host program banger runs, and what its absence means."""

    program: str
    version_args: tuple[str, ...] | None
    package: str
    purpose: str
    missing: Status = "fail"
    #: Only the QEMU driver needs it: not a failure when Firecracker can be used.
    qemu_only: bool = False


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "qemu-system-x86_64", ("--version",), "qemu-system-x86", "the QEMU driver", qemu_only=True
    ),
    ToolSpec("qemu-img", ("--version",), "qemu-utils", "qcow2 root disks for QEMU", qemu_only=True),
    ToolSpec("mkfs.ext4", ("-V",), "e2fsprogs", "creating work disks"),
    ToolSpec("debugfs", ("-V",), "e2fsprogs", "provisioning disks without mounting them"),
    ToolSpec("resize2fs", (), "e2fsprogs", "growing disks"),
    ToolSpec("e2fsck", ("-V",), "e2fsprogs", "checking disks before resizing"),
    ToolSpec("nft", ("--version",), "nftables", "NAT for VM networks"),
    ToolSpec("ip", ("-V",), "iproute2", "bridges and taps"),
    ToolSpec("skopeo", ("--version",), "skopeo", "pulling OCI images", missing="warn"),
    ToolSpec("mmdebstrap", ("--version",), "mmdebstrap", "building distro images", missing="warn"),
    ToolSpec("ssh", ("-V",), "openssh-client", "`banger ssh` shells", missing="warn"),
    ToolSpec("ssh-keygen", None, "openssh-client", "generating guest and client keys"),
)


def check_tool(spec: ToolSpec) -> Check:
    def check(ctx: DoctorContext) -> CheckResult:
        path = which(spec.program)
        if path is None:
            status: Status = spec.missing
            detail = f"not installed: {spec.purpose} is unavailable"
            if spec.qemu_only and ctx.firecracker_usable:
                status = "warn"
                detail += " (Firecracker is used instead)"
            return CheckResult(spec.program, status, detail, f"apt-get install {spec.package}")
        if spec.version_args is None:
            return CheckResult(spec.program, "pass", f"found at {path}")
        version = tool_version(path, spec.version_args)
        if version is None:
            return CheckResult(
                spec.program,
                "warn",
                f"{path} did not report a version",
                f"check that {path} runs: {path} {' '.join(spec.version_args)}",
            )
        return CheckResult(spec.program, "pass", f"{version} at {path}")

    check.__name__ = f"check_{spec.program}"
    return check


# -- individual checks ------------------------------------------------------------------


def check_virtualisation(ctx: DoctorContext) -> CheckResult:
    name = "hardware virtualisation"
    if ctx.kvm.usable_for_ordinary_guests:
        return CheckResult(name, "pass", f"{ctx.kvm.reason}: guests run under KVM")
    fix = (
        f"add {ctx.user} to the group owning /dev/kvm and log in again"
        if ctx.kvm.device_present and ctx.kvm.hardware_virtualisation and not ctx.kvm.paravirtual
        else "run on a host (or a VM with nested virtualisation) whose CPU exposes vmx/svm"
    )
    return CheckResult(
        name,
        "warn",
        f"{ctx.kvm.reason}: QEMU will fall back to software emulation (TCG), "
        "which is several times slower",
        fix,
    )


def check_firecracker(ctx: DoctorContext) -> CheckResult:
    if ctx.firecracker is None:
        return CheckResult(
            "firecracker",
            "warn",
            "not installed: VMs use the QEMU driver",
            f"install firecracker and jailer from {FIRECRACKER_RELEASES}",
        )
    version = tool_version(ctx.firecracker, ("--version",)) or "unknown version"
    if not ctx.kvm.usable_for_ordinary_guests:
        return CheckResult(
            "firecracker",
            "warn",
            f"{version} at {ctx.firecracker}, but Firecracker needs KVM, which is not usable "
            "here: VMs use the QEMU driver",
            "see the hardware virtualisation check",
        )
    return CheckResult("firecracker", "pass", f"{version} at {ctx.firecracker}")


def check_jailer(ctx: DoctorContext) -> CheckResult:
    if ctx.jailer is None:
        meaning = (
            "Firecracker would run without its jailer (no chroot, no namespaces)"
            if ctx.firecracker
            else "not needed while Firecracker is absent"
        )
        return CheckResult(
            "jailer",
            "warn",
            f"not installed: {meaning}",
            f"install the jailer from the same release as firecracker ({FIRECRACKER_RELEASES})",
        )
    version = tool_version(ctx.jailer, ("--version",)) or "unknown version"
    return CheckResult("jailer", "pass", f"{version} at {ctx.jailer}")


def check_busybox(ctx: DoctorContext) -> CheckResult:
    name = "busybox (static)"
    fix = "apt-get install busybox-static"
    path = which("busybox")
    if path is None:
        return CheckResult(
            name, "warn", "not installed: initramfs for distro kernels cannot be built", fix
        )
    static = hostinfo.binary_is_static(Path(path))
    if static is not True:
        return CheckResult(
            name,
            "warn",
            f"{path} is dynamically linked: it would not run inside an initramfs",
            fix,
        )
    version = tool_version(path, ("--help",)) or "unknown version"
    return CheckResult(name, "pass", f"{version} at {path}, statically linked")


def check_tun(ctx: DoctorContext) -> CheckResult:
    name = "/dev/net/tun"
    if not hostinfo.tun_present():
        return CheckResult(name, "fail", "missing: VMs cannot have a network", "modprobe tun")
    probe = hostinfo.tun_accessible()
    if probe.ok:
        return CheckResult(name, "pass", probe.detail)
    if ctx.firecracker_usable:
        # Firecracker opens its tap by name (no descriptor passing); banger never
        # changes device permissions itself, so the choice is the admin's.
        return CheckResult(
            name,
            "warn",
            "root-only: Firecracker opens its tap by name itself, so without the jailer "
            "it cannot open it here",
            "set firecracker.jailer = true (the root helper runs the jailer, which makes "
            "/dev/net/tun inside each jail; needs banger-helper --jailer/--firecracker"
            + ("" if ctx.jailer else " and the jailer installed")
            + '), or have an admin accept a udev rule such as KERNEL=="tun", '
            'GROUP="<owner group>", MODE="0660", or set vmm = "qemu"',
        )
    return CheckResult(
        name,
        "pass",
        "root-only, which is fine: the helper opens each tap and passes the descriptor to QEMU",
    )


def check_loop(ctx: DoctorContext) -> CheckResult:
    probe = hostinfo.loop_devices_available()
    if probe.ok:
        return CheckResult("loop devices", "pass", probe.detail)
    return CheckResult(
        "loop devices",
        "warn",
        f"{probe.detail}: device-mapper root disks are unavailable",
        "modprobe loop",
    )


def check_device_mapper(ctx: DoctorContext) -> CheckResult:
    probe = hostinfo.device_mapper_usable()
    if probe.ok:
        return CheckResult("device-mapper", "pass", probe.detail)
    return CheckResult(
        "device-mapper",
        "warn",
        f"{probe.detail}: root disks use a qcow2 overlay (QEMU), a reflink or a sparse copy",
        "apt-get install dmsetup; modprobe dm_snapshot",
    )


def _nearest_existing(path: Path) -> Path:
    # lexists: False, not PermissionError, below a directory closed to us
    # (BANGER_HOME in another user's); the probe then says it cannot write there.
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_reflink(ctx: DoctorContext) -> CheckResult:
    where = _nearest_existing(ctx.paths.state_dir)
    probe = hostinfo.reflink_supported(where)
    if probe.ok:
        return CheckResult("reflink copies", "pass", probe.detail)
    return CheckResult(
        "reflink copies",
        "warn",
        f"{probe.detail}: raw root disks fall back to device-mapper or a sparse copy",
        "put the state directory on btrfs or XFS (reflink=1) for instant copies",
    )


def _in_group_database(user: str, group: grp.struct_group) -> bool:
    try:
        primary = pwd.getpwnam(user).pw_gid
    except KeyError:
        return False
    return user in group.gr_mem or primary == group.gr_gid


def check_kvm_group(ctx: DoctorContext) -> CheckResult:
    name = "kvm group"
    kvm = ctx.kvm
    if not (kvm.device_present and kvm.hardware_virtualisation and not kvm.paravirtual):
        return CheckResult(name, "pass", "not needed: KVM is not usable for ordinary guests here")
    if kvm.device_accessible:
        return CheckResult(name, "pass", f"{ctx.user} can open {hostinfo.KVM_DEVICE}")
    try:
        group = grp.getgrgid(hostinfo.KVM_DEVICE.stat().st_gid)
    except (OSError, KeyError):
        return CheckResult(
            name, "warn", f"{hostinfo.KVM_DEVICE} is not group-accessible", "ask your admin"
        )
    fix = f"sudo usermod -aG {group.gr_name} {ctx.user}, then log in again"
    if _in_group_database(ctx.user, group):
        return CheckResult(
            name,
            "warn",
            f"{ctx.user} is in group {group.gr_name} but this session is not: log in again",
            "log out and back in (or run `newgrp kvm`)",
        )
    return CheckResult(
        name,
        "warn",
        f"{ctx.user} is not in group {group.gr_name}: QEMU falls back to TCG",
        fix,
    )


def check_apt(ctx: DoctorContext) -> CheckResult:
    name = "apt tooling"
    missing = [p for p in ("apt-get", "dpkg-deb") if which(p) is None]
    if missing:
        return CheckResult(
            name,
            "warn",
            f"{' and '.join(missing)} not found: `banger kernel pull debian` is unavailable",
            "use a Debian-based host, or provide a kernel another way",
        )
    return CheckResult(name, "pass", "apt-get and dpkg-deb found (for `banger kernel pull debian`)")


def check_host_resources(ctx: DoctorContext) -> CheckResult:
    name = "host resources"
    cpus = hostinfo.host_cpu_count()
    memory = hostinfo.host_memory_mib()
    tsc = hostinfo.host_tsc_khz()
    detail = (
        f"{cpus} CPUs, {memory if memory is not None else '?'} MiB memory, "
        f"TSC {f'{tsc} kHz' if tsc else 'rate unknown'}"
    )
    if tsc is None and hostinfo.choose_accelerator(ctx.kvm) == "tcg":
        return CheckResult(
            name,
            "warn",
            f"{detail}: TCG guests may hang calibrating their clock",
            "run banger as root once, or allow dmesg (sysctl kernel.dmesg_restrict=0)",
        )
    return CheckResult(name, "pass", detail)


def check_config(ctx: DoctorContext) -> CheckResult:
    name = "config"
    path = ctx.paths.config_file
    try:
        from banger.config import config_problems
    except ImportError:
        return CheckResult(name, "pass", "skipped: this build has no config validation")
    problems = config_problems(path, missing_ok=True)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return CheckResult(
            name, "fail", f"{path}: {problems[0]}{more}", "run `banger config validate`"
        )
    if not path.exists():
        return CheckResult(name, "pass", f"no {path}: defaults apply")
    return CheckResult(name, "pass", f"{path} is valid")


def check_runtime_dir(ctx: DoctorContext) -> CheckResult:
    """The CLI's own check of the runtime directory, so doctor says what the CLI would refuse."""
    name = "runtime directory"
    path = ctx.paths.runtime_dir
    try:
        check_private_dir(path)
    except BangerError as exc:
        return CheckResult(name, "fail", exc.message, exc.hint or "")
    if not os.path.lexists(path):
        return CheckResult(name, "pass", f"{path} (made 0700 on first use)")
    return CheckResult(name, "pass", f"{path}: {ctx.user}'s or root's, no stranger may write it")


def _behind_runtime_dir(check: Check) -> Check:
    """``check`` talks to a socket in the runtime directory: never through one the CLI refuses.

    Such a socket could be a squatter's fake daemon, and another user's closed
    directory would end the probe in a PermissionError rather than a result.
    """

    @functools.wraps(check)
    def guarded(ctx: DoctorContext) -> CheckResult:
        try:
            check_private_dir(ctx.paths.runtime_dir)
        except BangerError as exc:
            name = check.__name__.removeprefix("check_").replace("_", " ")
            return CheckResult(name, "fail", f"not probed: {exc.message}", exc.hint or "")
        return check(ctx)

    return guarded


@_behind_runtime_dir
def check_daemon(ctx: DoctorContext) -> CheckResult:
    name = "daemon"
    probe = probe_daemon(ctx.paths.daemon_socket)
    if probe.up:
        return CheckResult(name, "pass", f"bangerd {probe.version or '?'} {probe.detail}")
    if probe.state == "absent":
        return CheckResult(
            name,
            "warn",
            f"not running ({probe.detail})",
            "nothing to do: the CLI starts bangerd on first use (or `banger system install`)",
        )
    return CheckResult(
        name,
        "fail",
        probe.detail,
        "restart it: `banger system restart`, or remove the stale socket",
    )


@_behind_runtime_dir
def check_helper(ctx: DoctorContext) -> CheckResult:
    name = "helper"
    probe = probe_helper(ctx.paths.helper_socket)
    if probe.up:
        return CheckResult(name, "pass", f"banger-helper {probe.version or '?'} {probe.detail}")
    if probe.state in ("absent", "stale"):
        # Without an install, the CLI starts it before the first command that needs it.
        return CheckResult(
            name,
            "warn",
            f"not running ({probe.detail})",
            "nothing to do as root or with passwordless sudo: the CLI starts it on first "
            "use; otherwise `sudo banger system install`",
        )
    return CheckResult(
        name, "fail", probe.detail, "check the helper's log, then `sudo banger system restart`"
    )


@_behind_runtime_dir
def check_vm_dns(ctx: DoctorContext) -> CheckResult:
    """bangerd's VM resolver, and whether the host routes the VM domain to it."""
    return dns.check_vm_dns(ctx)


def check_reconciliation(ctx: DoctorContext) -> CheckResult:
    """What bangerd repaired at its last start (state/reconcile.json)."""
    return reconcile.check_reconciliation(ctx)


def check_stray_taps(ctx: DoctorContext) -> CheckResult:
    """``bt-…`` taps of this owner that no VM record accounts for."""
    return taps.check_stray_taps(ctx)


CHECKS: tuple[Check, ...] = (
    check_virtualisation,
    check_firecracker,
    check_jailer,
    *(check_tool(spec) for spec in TOOLS),
    check_busybox,
    check_tun,
    check_loop,
    check_device_mapper,
    check_reflink,
    check_kvm_group,
    check_apt,
    check_host_resources,
    check_config,
    check_runtime_dir,
    check_daemon,
    check_helper,
    check_vm_dns,
    check_reconciliation,
    check_stray_taps,
)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def gather_context(
    paths: Paths, *, firecracker: str = "firecracker", jailer: str = "jailer"
) -> DoctorContext:
    return DoctorContext(
        paths=paths,
        kvm=hostinfo.kvm_status(),
        firecracker=shutil.which(firecracker),
        jailer=shutil.which(jailer),
        user=_current_user(),
    )


def _guarded(check: Check, ctx: DoctorContext) -> CheckResult:
    """A check that breaks reports itself as failed instead of ending the run."""
    try:
        return check(ctx)
    except BangerError as exc:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        return CheckResult(name, "fail", exc.message, exc.hint or "")
    except Exception as exc:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        return CheckResult(name, "fail", f"the check itself failed: {exc!r}", "report a bug")


def run_checks(
    paths: Paths,
    *,
    checks: tuple[Check, ...] = CHECKS,
    firecracker: str = "firecracker",
    jailer: str = "jailer",
) -> list[CheckResult]:
    """Run every check (concurrently) and return the results in check order."""
    ctx = gather_context(paths, firecracker=firecracker, jailer=jailer)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="doctor") as pool:
        return list(pool.map(lambda check: _guarded(check, ctx), checks))


def failed(results: list[CheckResult]) -> bool:
    return any(r.status == "fail" for r in results)
