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

The filesystem steps at the end run as root against a hostile owner (see
:mod:`banger.helper.rootstage`). The chroot base is root's and outside the
owner's tree — the jailer itself creates ``<base>/<exec-name>/<id>/root`` by
path as root, so a base the owner could write would let it redirect that —
and even so every step works from descriptors: the jail directories are opened
with ``O_NOFOLLOW`` from the base and must be root's; each source file is
opened without following links from ``/`` through the owner's state
directory, checked on its descriptor and hard-linked *from that descriptor*
(``/proc/self/fd/N`` with ``AT_SYMLINK_FOLLOW`` links the open file itself),
so no swap between the check and the link can change what gets linked.
Teardown empties the jail by descriptor, never following a link and never
entering another filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from banger.errors import BangerError, InvalidArgument
from banger.helper.rootstage import StageError, empty_dir, walk_nofollow
from banger.limits import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS

#: The jailer's ``--id``: letters, digits and '-', at most 64 characters.
JAIL_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JAIL_SOCKET = "/run/firecracker.socket"
#: The guest agent's vsock ``uds_path`` inside the jail, beside the API socket in the
#: owner's ``/run`` (Firecracker binds it; the daemon links the VM's agent socket to it).
JAIL_AGENT_SOCKET = "/run/agent.vsock"
PARENT_CGROUP = "banger"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
#: Headroom over guest memory for the VMM itself (≤ 5 MiB documented) and the
#: page cache of its disk I/O, which is charged to the same cgroup.
MEMORY_OVERHEAD_MIB = 64
OP = "start_jailer"
#: Firecracker's own default ``--chroot-base-dir``: a directory only root can write.
DEFAULT_CHROOT_BASE = Path("/srv/jailer")

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
    #: ``--jail-base``: root's, outside the owner's tree (see :func:`check_jail_base`).
    chroot_base: Path = DEFAULT_CHROOT_BASE


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
    # The jail base is root's and never overlaps the state dir (checked at helper start),
    # so a path inside the state dir is never inside a jail.
    if not value.startswith(base + "/"):
        raise ValueError(f"must be inside {base}")
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
    check("vcpus", lambda v: _int(v, MIN_VCPUS, MAX_VCPUS))
    check("memory_mib", lambda v: _int(v, MIN_MEMORY_MIB, MAX_MEMORY_MIB))
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
    def base(self) -> Path:
        return self.jail_dir.parent.parent

    @property
    def exec_name(self) -> str:
        return self.jail_dir.parent.name

    @property
    def jail_id(self) -> str:
        return self.jail_dir.name

    @property
    def pid_name(self) -> str:
        """The jailer's ``--daemonize`` pid file, in the jail root."""
        return f"{self.exec_name}.pid"

    @property
    def pid_file(self) -> Path:
        return self.root / self.pid_name

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

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A source or the pid file: never through a link, never blocking on a FIFO or a tty.
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: The jail's directories: Firecracker (as the owner) must traverse them, not write them.
JAIL_DIR_MODE = 0o755
#: A pid and a newline; anything longer is not the jailer's pid file.
PID_FILE_MAX = 64
SAME_FS_HINT = (
    "the jail base (banger-helper --jail-base) must be on the filesystem of banger's state "
    "directory: the jail hard-links the VM's disks and logs"
)


class JailSetupError(BangerError):
    pass


def check_jail_base(base: Path, flag: str = "--jail-base") -> None:
    """At helper start: ``base`` and every directory above it are root's, writable by no
    one else, and no symlink; the last component is created (root, 0755) when missing.

    Only root can change such a chain afterwards, so the ops need not walk it again
    with these checks: they open the base with ``O_NOFOLLOW`` and check what is below.
    """
    if not base.is_absolute() or ".." in base.parts or base == Path("/"):
        raise JailSetupError(f"{flag} {base}: must be an absolute, normalised path below /")
    fd = os.open("/", _O_DIR)
    try:
        _check_base_component(fd, Path("/"), base, flag)
        current = Path("/")
        last = len(base.parts) - 1
        for i, part in enumerate(base.parts[1:], start=1):
            current = current / part
            created = False
            if i == last:
                try:
                    os.mkdir(part, JAIL_DIR_MODE, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise JailSetupError(
                        f"{flag} {base}: cannot create it: {exc.strerror}"
                    ) from None
            try:
                child = os.open(part, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                raise JailSetupError(f"{flag} {base}: {current} does not exist") from None
            except OSError as exc:  # ELOOP: a symlink; ENOTDIR: not a directory
                raise JailSetupError(
                    f"{flag} {base}: {current} is not a plain directory (a symlink? {exc.strerror})"
                ) from None
            os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, JAIL_DIR_MODE)  # the umask (0077 under systemd) must not apply
            _check_base_component(fd, current, base, flag)
    finally:
        os.close(fd)


def _check_base_component(fd: int, current: Path, base: Path, flag: str) -> None:
    st = os.fstat(fd)
    if st.st_uid != 0:
        raise JailSetupError(f"{flag} {base}: {current} belongs to uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        raise JailSetupError(
            f"{flag} {base}: {current} is group- or other-writable "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); the jail base must be root's alone"
        )


def _check_jail_dir(fd: int, path: Path, parent_dev: int | None) -> None:
    """A directory of the jail is the helper's own (root's), written by no one else, and
    on the base's filesystem; anything else was not made by the helper or the jailer."""
    st = os.fstat(fd)
    if (
        st.st_uid != os.geteuid()
        or st.st_mode & 0o022
        or (parent_dev is not None and st.st_dev != parent_dev)
    ):
        os.close(fd)
        raise JailSetupError(
            f"{path}: not a jail directory of the helper's (uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):04o}); remove it by hand"
        )


def _open_base(base: Path) -> int:
    try:
        fd = walk_nofollow(str(base))
    except OSError as exc:
        raise JailSetupError(
            f"jail base {base}: {exc.strerror} (banger-helper --jail-base)"
        ) from None
    _check_jail_dir(fd, base, None)
    return fd


def _open_jail_dir(parent_fd: int, name: str, path: Path, *, create: bool) -> int:
    """``name`` in ``parent_fd``, never through a symlink; FileNotFoundError unless ``create``."""
    created = False
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, JAIL_DIR_MODE, dir_fd=parent_fd)
            created = True
    try:
        fd = os.open(name, _O_DIR, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP/ENOTDIR: only root could have put it there, but still
        raise JailSetupError(f"{path}: not a plain directory ({exc.strerror})") from None
    if created:
        os.fchmod(fd, JAIL_DIR_MODE)  # the umask must not apply
    _check_jail_dir(fd, path, os.fstat(parent_fd).st_dev)
    return fd


def open_jail_root(layout: JailLayout, *, create: bool) -> int | None:
    """A descriptor of the jail root, walked from the base with ``O_NOFOLLOW``.

    ``create``: make the missing directories (root's, 0755); otherwise None when
    the jail does not exist.
    """
    fd = _open_base(layout.base)
    path = layout.base
    try:
        for name in (layout.exec_name, layout.jail_id, "root"):
            path = path / name
            try:
                child = _open_jail_dir(fd, name, path, create=create)
            except FileNotFoundError:
                return None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    if path != layout.root:  # the walk and the layout must agree
        os.close(fd)
        raise JailSetupError(f"{layout.root}: not where the jail root was found ({path})")
    return fd


def open_sources(request: JailRequest, policy: JailerPolicy) -> dict[Path, int]:
    """Each source, opened without following any link and checked on its descriptor: a
    regular file of the owner. The caller closes the descriptors (:func:`close_all`)."""
    fds: dict[Path, int] = {}
    try:
        for role, path in request.files().items():
            fds[path] = _open_source(f"{OP}.args.{role}", path, policy.uid)
    except BaseException:
        close_all(fds)
        raise
    return fds


def _open_source(what: str, path: Path, uid: int) -> int:
    try:
        parent = walk_nofollow(str(path.parent))
    except FileNotFoundError:
        raise JailSetupError(f"{what}: {path.parent} does not exist") from None
    except OSError as exc:  # ELOOP/ENOTDIR
        raise JailSetupError(
            f"{what}: {path.parent} is not a plain directory (a symlink on the path? "
            f"{exc.strerror})"
        ) from None
    try:
        fd = os.open(path.name, _O_FILE, dir_fd=parent)
    except FileNotFoundError:
        raise JailSetupError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JailSetupError(f"{what}: {path} is a symlink") from None
        raise JailSetupError(f"{what}: {path}: {exc.strerror}") from None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
        os.close(fd)
        raise JailSetupError(f"{what}: {path} is not a regular file of the owner")
    return fd


def close_all(fds: Mapping[Path, int]) -> None:
    for fd in fds.values():
        os.close(fd)


def populate_jail(root_fd: int, layout: JailLayout, sources: Mapping[Path, int]) -> None:
    """Hard-link (or, for read-only inputs, copy) every opened source into the jail root.

    The link is made from the descriptor: ``linkat`` of ``/proc/self/fd/N`` with
    ``AT_SYMLINK_FOLLOW`` links the open file itself, whatever its path is now.
    """
    for source, name, must_link in layout.entries:
        fd = sources[source]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=root_fd)
        try:
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=root_fd, follow_symlinks=True)
        except OSError as exc:
            if must_link:
                raise JailSetupError(
                    f"cannot hard-link {source} into the jail: {exc.strerror}", hint=SAME_FS_HINT
                ) from None
            _copy_from(fd, root_fd, name)


def _copy_from(src_fd: int, root_fd: int, name: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(name, flags, 0o444, dir_fd=root_fd)
    try:
        # The owner's file, readable by the owner's Firecracker: a read-only copy of root's.
        os.fchmod(out, 0o444)
        offset = 0
        while True:
            chunk = os.pread(src_fd, 1 << 20, offset)
            if not chunk:
                break
            os.write(out, chunk)
            offset += len(chunk)
    finally:
        os.close(out)


def make_run_dir(root_fd: int, uid: int, gid: int) -> None:
    """``<jail root>/run``, the owner's: Firecracker binds its API socket there."""
    with contextlib.suppress(FileExistsError):
        os.mkdir("run", 0o700, dir_fd=root_fd)
    fd = os.open("run", _O_DIR, dir_fd=root_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def read_pid_file(root_fd: int, name: str) -> int | None:
    """The pid in ``<jail root>/<name>``, or None while it is missing or not a pid.

    Never through a link, never from a FIFO or anything but a regular file, at most
    :data:`PID_FILE_MAX` bytes: the jail root is root's, but don't trust what is read.
    """
    try:
        fd = os.open(name, _O_FILE, dir_fd=root_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, PID_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > PID_FILE_MAX:
        return None
    try:
        pid = int(data.split()[0])
    except (ValueError, IndexError):
        return None
    return pid if pid > 1 else None


def teardown_jail(layout: JailLayout) -> bool:
    """Remove the jail directory (links only: the VM's files stay) and the empty cgroup.

    By descriptor from the base: ``<exec>`` and ``<id>`` are opened with
    ``O_NOFOLLOW`` and must be the helper's; the contents go through
    :func:`banger.helper.rootstage.empty_dir` (no link followed, no other filesystem
    entered). Whether the jail existed is returned.
    """
    existed = False
    base_fd = _open_base(layout.base)
    try:
        try:
            exec_fd = _open_jail_dir(
                base_fd, layout.exec_name, layout.base / layout.exec_name, create=False
            )
        except FileNotFoundError:
            exec_fd = -1
        if exec_fd >= 0:
            try:
                existed = _remove_jail_dir(exec_fd, layout)
            finally:
                os.close(exec_fd)
    finally:
        os.close(base_fd)
    with contextlib.suppress(FileNotFoundError):
        layout.cgroup.rmdir()  # cgroupfs: root's, not the owner's
    return existed


def _remove_jail_dir(exec_fd: int, layout: JailLayout) -> bool:
    try:
        fd = _open_jail_dir(exec_fd, layout.jail_id, layout.jail_dir, create=False)
    except FileNotFoundError:
        return False
    try:
        empty_dir(fd)
    except StageError as exc:
        raise JailSetupError(f"{layout.jail_dir}: {exc.message}; remove it by hand") from None
    finally:
        os.close(fd)
    os.rmdir(layout.jail_id, dir_fd=exec_fd)
    return True
