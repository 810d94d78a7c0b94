"""Jailer mode: the argv, the jail's layout and the validation of a jail request.

Firecracker's jailer must start as root: it creates
``<chroot-base>/<exec-name>/<id>/root``, copies Firecracker in, creates a cgroup
with the given limits, pivots into the jail, makes ``/dev/kvm`` and
``/dev/net/tun`` for the VM's uid/gid, drops to them and execs Firecracker.
In banger only the root helper runs it, through one op (``start_jailer``) whose
arguments are validated here: the uid/gid, the binaries and the chroot base come
from the helper's own policy, never from the request; the request names only
the VM, its size and files inside banger's state directory.

Everything Firecracker opens must be inside the jail. Read-only inputs (kernel,
initrd, a read-only root) are hard-linked, or copied when the link fails
(another filesystem). Writable files (disks, console, log, metrics) are
*only* hard-linked: a copy would be a different file, and the guest's writes
would vanish with the jail. The API then gets the paths inside the jail.

Nothing here runs the jailer; the helper does (see ``docs`` in the report).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from banger.errors import BangerError, InvalidArgument

#: The jailer's ``--id``: letters, digits and '-', at most 64 characters.
JAIL_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JAIL_SOCKET = "/run/firecracker.socket"
PARENT_CGROUP = "banger"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
#: Headroom over guest memory for the VMM itself (≤ 5 MiB documented) and the
#: page cache of its disk I/O, which is charged to the same cgroup.
MEMORY_OVERHEAD_MIB = 64
OP = "start_jailer"

#: File names inside the jail root, fixed so the API paths never depend on the host's.
NAMES = {
    "kernel": "vmlinux",
    "initrd": "initrd.img",
    "root_disk": "root.img",
    "work_disk": "work.img",
    "console_log": "console.log",
    "log": "firecracker.log",
    "metrics": "firecracker.metrics",
}
#: Files Firecracker writes: they must be the same inode, never a copy.
WRITABLE = frozenset({"work_disk", "console_log", "log", "metrics"})


class JailerRequestInvalid(InvalidArgument):
    """A ``start_jailer`` request failed validation; the message names every bad field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), hint="this is a banger bug or a hostile caller")
        self.problems = problems


@dataclass(frozen=True)
class JailerPolicy:
    """The helper's own configuration: what no request can choose."""

    state_dir: Path
    uid: int
    gid: int
    jailer: Path
    firecracker: Path

    @property
    def chroot_base(self) -> Path:
        return self.state_dir / "jail"


@dataclass(frozen=True)
class JailRequest:
    vm_id: str
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path | None
    root_disk: Path
    root_read_only: bool
    work_disk: Path | None
    console_log: Path
    log: Path
    metrics: Path
    netns: str | None = None

    @property
    def jail_id(self) -> str:
        return self.vm_id.replace("_", "-")

    def files(self) -> dict[str, Path]:
        """The host files to place in the jail, by role."""
        out = {
            "kernel": self.kernel,
            "root_disk": self.root_disk,
            "console_log": self.console_log,
            "log": self.log,
            "metrics": self.metrics,
        }
        if self.initrd is not None:
            out["initrd"] = self.initrd
        if self.work_disk is not None:
            out["work_disk"] = self.work_disk
        return out

    def to_args(self) -> dict[str, object]:
        """The op's JSON arguments (what the daemon sends)."""
        return {
            "vm_id": self.vm_id,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "root_disk": str(self.root_disk),
            "root_read_only": self.root_read_only,
            "work_disk": str(self.work_disk) if self.work_disk else None,
            "console_log": str(self.console_log),
            "log": str(self.log),
            "metrics": str(self.metrics),
            "netns": self.netns,
        }


# -- validation (pure) -----------------------------------------------------------------

_FIELDS = {
    "vm_id", "vcpus", "memory_mib", "kernel", "initrd", "root_disk", "root_read_only",
    "work_disk", "console_log", "log", "metrics", "netns",
}  # fmt: skip
_OPTIONAL = {"initrd", "work_disk", "netns"}
#: Every field of a ``start_jailer`` request (all required; initrd, work_disk, netns may be null).
REQUEST_FIELDS = frozenset(_FIELDS)


def _state_path(policy: JailerPolicy, value: object) -> Path:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if "\0" in value or "\n" in value:
        raise ValueError("contains NUL or a newline")
    if not value.startswith("/") or posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError("must be an absolute, normalised path (no '.', '..' or '//')")
    base = str(policy.state_dir)
    if not value.startswith(base + "/") or value.startswith(str(policy.chroot_base) + "/"):
        raise ValueError(f"must be inside {base} (and not inside the jail)")
    return Path(value)


def _int(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


def validate_jailer_request(args: Mapping[str, object], policy: JailerPolicy) -> JailRequest:
    """Check every field of a ``start_jailer`` request; report every problem at once."""
    problems: list[str] = []
    if not isinstance(args, Mapping):
        raise JailerRequestInvalid([f"{OP}.args: must be an object"])
    for key in sorted(set(args) - _FIELDS, key=str):
        problems.append(f"{OP}.args.{key}: unknown field")
    for key in sorted(_FIELDS - set(args)):
        problems.append(f"{OP}.args.{key}: missing")
    checked: dict[str, object] = {}

    def check(key: str, fn: object) -> None:
        if key not in args:
            return
        value = args[key]
        if key in _OPTIONAL and value is None:
            checked[key] = None
            return
        try:
            checked[key] = fn(value)  # type: ignore[operator]
        except ValueError as exc:
            problems.append(f"{OP}.args.{key}: {exc}")

    def vm_id(value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value

    def flag(value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be a boolean, got {type(value).__name__}")
        return value

    def netns(value: object) -> str:
        if not isinstance(value, str) or not _NETNS.fullmatch(value):
            raise ValueError("must be a network namespace name")
        return value

    check("vm_id", vm_id)
    check("vcpus", lambda v: _int(v, 1, 32))
    check("memory_mib", lambda v: _int(v, 64, 1 << 20))
    for key in ("kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics"):
        check(key, lambda v: _state_path(policy, v))
    check("root_read_only", flag)
    check("netns", netns)
    if problems:
        raise JailerRequestInvalid(problems)
    paths = [checked[k] for k in NAMES if checked.get(k) is not None]
    if len(set(paths)) != len(paths):
        raise JailerRequestInvalid([f"{OP}.args: the same file is named twice"])
    return JailRequest(**checked)  # type: ignore[arg-type]


# -- argv and layout (pure) --------------------------------------------------------------


def cgroup_limits(vcpus: int, memory_mib: int) -> dict[str, str]:
    """cgroup v2 limits: ``vcpus`` whole CPUs, guest memory plus the VMM's headroom."""
    return {
        "cpu.max": f"{vcpus * CPU_PERIOD_US} {CPU_PERIOD_US}",
        "memory.max": str((memory_mib + MEMORY_OVERHEAD_MIB) << 20),
    }


def jailer_argv(request: JailRequest, policy: JailerPolicy) -> list[str]:
    argv = [
        str(policy.jailer),
        "--id", request.jail_id,
        "--exec-file", str(policy.firecracker),
        "--uid", str(policy.uid),
        "--gid", str(policy.gid),
        "--chroot-base-dir", str(policy.chroot_base),
        "--cgroup-version", "2",
        "--parent-cgroup", PARENT_CGROUP,
    ]  # fmt: skip
    for name, value in cgroup_limits(request.vcpus, request.memory_mib).items():
        argv += ["--cgroup", f"{name}={value}"]
    if request.netns is not None:
        argv += ["--netns", f"/var/run/netns/{request.netns}"]
    # --daemonize: the jailer detaches (Firecracker is not the helper's child) and
    # writes <jail root>/firecracker.pid; stdio goes to /dev/null, so the console is
    # sent to the hard-linked console.log through PUT /serial instead.
    argv += ["--daemonize", "--", "--api-sock", JAIL_SOCKET]
    return argv


@dataclass(frozen=True)
class JailLayout:
    jail_dir: Path  # <chroot-base>/<exec-name>/<id>: removed whole at teardown
    root: Path  # jail_dir/root: Firecracker's /
    cgroup: Path
    #: (host source, name inside the root, must be a hard link)
    entries: tuple[tuple[Path, str, bool], ...]

    @property
    def socket(self) -> Path:
        """The API socket as the host sees it (often too long for sun_path: symlink to it)."""
        return self.root / JAIL_SOCKET.lstrip("/")

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.jail_dir.parent.name}.pid"

    def path_in_jail(self, host: Path) -> str:
        """The path Firecracker sees for a host file placed in the jail."""
        for source, name, _ in self.entries:
            if source == host:
                return f"/{name}"
        raise InvalidArgument(f"{host} is not placed in the jail of {self.jail_dir.name}")


def jail_layout(request: JailRequest, policy: JailerPolicy) -> JailLayout:
    jail_dir = policy.chroot_base / policy.firecracker.name / request.jail_id
    writable = set(WRITABLE) | (set() if request.root_read_only else {"root_disk"})
    entries = tuple(
        (source, NAMES[role], role in writable) for role, source in request.files().items()
    )
    return JailLayout(
        jail_dir, jail_dir / "root", CGROUP_ROOT / PARENT_CGROUP / request.jail_id, entries
    )


def teardown_layout(vm_id: str, policy: JailerPolicy) -> JailLayout:
    """The jail directory and cgroup of ``vm_id``, from the id alone (for ``teardown_jail``)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", vm_id):
        raise JailerRequestInvalid([f"teardown_jail.args.vm_id: not a VM id: {vm_id!r}"])
    jail_id = vm_id.replace("_", "-")
    jail_dir = policy.chroot_base / policy.firecracker.name / jail_id
    return JailLayout(jail_dir, jail_dir / "root", CGROUP_ROOT / PARENT_CGROUP / jail_id, ())


# -- filesystem steps (the helper runs these as root) ------------------------------------


class JailSetupError(BangerError):
    pass


def check_sources(request: JailRequest, policy: JailerPolicy) -> None:
    """Each file is a regular file owned by the owner, with no symlink below the state dir."""
    for role, path in request.files().items():
        current = policy.state_dir
        for part in path.relative_to(policy.state_dir).parts:
            current = current / part
            try:
                st = current.lstat()
            except FileNotFoundError:
                raise JailSetupError(f"{OP}.args.{role}: {current} does not exist") from None
            if stat.S_ISLNK(st.st_mode):
                raise JailSetupError(f"{OP}.args.{role}: {current} is a symlink")
        if not stat.S_ISREG(st.st_mode) or st.st_uid != policy.uid:
            raise JailSetupError(f"{OP}.args.{role}: {path} is not a regular file of the owner")


def populate_jail(layout: JailLayout) -> None:
    """Hard-link (or, for read-only inputs, copy) every file into the jail root."""
    layout.root.mkdir(parents=True, exist_ok=True)
    for source, name, must_link in layout.entries:
        target = layout.root / name
        target.unlink(missing_ok=True)
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError as exc:
            if must_link:
                raise JailSetupError(
                    f"cannot hard-link {source} into the jail: {exc.strerror}",
                    hint="the jail must be on the same filesystem as banger's state directory",
                ) from None
            shutil.copyfile(source, target, follow_symlinks=False)


def teardown_jail(layout: JailLayout) -> None:
    """Remove the jail directory (links only: the VM's files stay) and the empty cgroup."""
    shutil.rmtree(layout.jail_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        layout.cgroup.rmdir()
