"""The helper's ``start_jailer`` and ``teardown_jail`` ops: Firecracker under its jailer.

The jailer must start as root. What it may do is fixed by the helper's own
command line, never by a request: ``banger-helper --jailer PATH --firecracker
PATH`` (absent: both ops are refused, naming the flags), the owner's uid/gid,
the state dir (the helper's first ``--allow-root``) and the chroot base
``--jail-base`` (default ``/srv/jailer``, Firecracker's own). The base must be
root's and outside the owner's tree — the jailer, as root, creates
``<base>/<exec-name>/<id>/root`` by path — so the helper checks it at start
(every component from ``/`` root's, not group/other-writable, no symlink) and
refuses to start otherwise. A request names only the VM, its size and files inside
the state directory (see :func:`banger.vmm.firecracker.jailer.validate_jailer_request`)::

    {"op": "start_jailer", "args": {"vm_id": "…", "vcpus": 2, "memory_mib": 1024,
     "kernel": "<state>/kernels/<id>/vmlinux", "initrd": …|null, "root_disk": …,
     "root_read_only": false, "work_disk": …|null, "console_log": …, "log": …,
     "metrics": …, "netns": null}}
    {"op": "teardown_jail", "args": {"vm_id": "…"}}

``start_jailer``: validate → open the sources without following links and
check them on their descriptors (regular owner files) → open the jail by
descriptor from the base and hard-link the sources from their descriptors →
run the jailer (``--daemonize``) → read the pid file it writes (by descriptor,
bounded wait) → return ``{pid, start_time, socket, jail_root}``.
``teardown_jail`` removes the jail directory by descriptor (links only; the
VM's files stay) and its cgroup. Both run one at a time: two requests for the
same VM must not lay out and tear down one jail at once.
"""

from __future__ import annotations

import logging
import os
import pwd
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banger import proc
from banger.errors import BangerError, CommandError, Conflict, HelperError
from banger.helper.validate import Context, OpSpec, RequestInvalid

if TYPE_CHECKING:
    from banger.vmm.firecracker.jailer import JailerPolicy, JailLayout, JailRequest

log = logging.getLogger(__name__)

START_OP, TEARDOWN_OP = "start_jailer", "teardown_jail"
#: ``jailer.REQUEST_FIELDS``, repeated so that building the op table imports nothing
#: beyond the helper's stdlib-only modules (a unit test keeps the two equal).
START_FIELDS = (
    "console_log", "initrd", "kernel", "log", "memory_mib", "metrics", "netns",
    "root_disk", "root_read_only", "vcpus", "vm_id", "work_disk",
)  # fmt: skip
#: The jailer forks and exits; Firecracker's pid file follows within milliseconds.
JAILER_TIMEOUT = 30.0
PID_FILE_WAIT = 5.0
NOT_CONFIGURED_HINT = (
    "start banger-helper with --jailer PATH --firecracker PATH (or set firecracker.jailer = false)"
)


class JailerNotConfigured(BangerError):
    http_status = 409


@dataclass(frozen=True)
class StartJailerArgs:
    request: JailRequest
    policy: JailerPolicy


@dataclass(frozen=True)
class TeardownJailArgs:
    layout: JailLayout


#: ``--jail-base`` when not given: Firecracker's own default, a root-only directory.
DEFAULT_JAIL_BASE = Path("/srv/jailer")
_jail_lock = threading.Lock()


def policy_from_flags(
    jailer: Path | None, firecracker: Path | None, allow_roots: tuple[Path, ...], owner_uid: int,
    owner_gid: int | None, jail_base: Path | None = None,
) -> JailerPolicy | None:  # fmt: skip
    """The helper's policy from its own flags; None (ops refused) unless both binaries are given.

    ``jail_base`` (``--jail-base``, None: the default) is checked and, if its last
    component is missing, created here: a helper with a bad base does not start.
    """
    if jailer is None and firecracker is None:
        if jail_base is not None:
            raise HelperError("--jail-base goes with --jailer and --firecracker")
        return None
    if jailer is None or firecracker is None:
        raise HelperError("--jailer and --firecracker go together", hint=NOT_CONFIGURED_HINT)
    for flag, path in (("--jailer", jailer), ("--firecracker", firecracker)):
        if not path.is_absolute() or not path.is_file() or not os.access(path, os.X_OK):
            raise HelperError(f"{flag} {path}: must be an absolute path to an executable file")
    if not allow_roots:
        raise HelperError("jailer mode needs --allow-root (banger's state directory)")
    from banger.vmm.firecracker.jailer import JailerPolicy, check_jail_base

    base = DEFAULT_JAIL_BASE if jail_base is None else jail_base
    for root in allow_roots:
        if base.is_relative_to(root) or root.is_relative_to(base):
            raise HelperError(
                f"--jail-base {base}: must not overlap --allow-root {root} (the owner writes there)"
            )
    check_jail_base(base)
    _warn_other_filesystem(base, allow_roots[0])
    gid = owner_gid if owner_gid is not None else pwd.getpwuid(owner_uid).pw_gid
    return JailerPolicy(allow_roots[0], owner_uid, gid, jailer, firecracker, base)


def _warn_other_filesystem(base: Path, state_dir: Path) -> None:
    """Writable files are only hard-linked: on another filesystem every start_jailer fails.

    Logged, not refused: the helper's other ops still work, and the failing op says why.
    """
    from banger.helper.rootstage import walk_nofollow

    devs = set()
    for path in (base, state_dir):
        try:
            fd = walk_nofollow(str(path))
        except OSError:
            return  # no state dir yet: the op reports it
        try:
            devs.add(os.fstat(fd).st_dev)
        finally:
            os.close(fd)
    if len(devs) > 1:
        log.warning(
            "--jail-base %s is not on the filesystem of %s: start_jailer cannot hard-link "
            "the VM's disks and logs into the jail",
            base,
            state_dir,
        )


def _passthrough(_ctx: Context, value: object) -> object:
    return value


@dataclass(frozen=True)
class NotConfiguredArgs:
    """A jailer op on a helper without a jailer policy: refused when run, with the hint."""

    op: str


def specs(policy: JailerPolicy | None) -> dict[str, OpSpec]:
    """Both ops' argument specs, bound to ``policy``; without one they refuse every request."""

    def build_start(**args: object) -> StartJailerArgs | NotConfiguredArgs:
        if policy is None:
            return NotConfiguredArgs(START_OP)
        from banger.vmm.firecracker.jailer import JailerRequestInvalid, validate_jailer_request

        try:
            return StartJailerArgs(validate_jailer_request(args, policy), policy)
        except JailerRequestInvalid as exc:
            raise RequestInvalid(exc.problems) from None

    def build_teardown(vm_id: object) -> TeardownJailArgs | NotConfiguredArgs:
        if policy is None:
            return NotConfiguredArgs(TEARDOWN_OP)
        from banger.vmm.firecracker.jailer import JailerRequestInvalid, teardown_layout

        try:
            return TeardownJailArgs(teardown_layout(_text(vm_id), policy))
        except JailerRequestInvalid as exc:
            raise RequestInvalid(exc.problems) from None

    # Every field passes through here; validate_jailer_request checks them all at once.
    return {
        START_OP: OpSpec(
            dict.fromkeys(START_FIELDS, _passthrough),
            build_start,
            "start Firecracker under the jailer (binaries and uid fixed by the helper)",
        ),
        TEARDOWN_OP: OpSpec(
            {"vm_id": _passthrough}, build_teardown, "remove a VM's jail directory and cgroup"
        ),
    }


def _text(value: object) -> str:
    # Anything but a string fails teardown_layout's id check, which names the field.
    return value if isinstance(value, str) else repr(value)


def run(args: StartJailerArgs | TeardownJailArgs | NotConfiguredArgs) -> dict[str, Any]:
    if isinstance(args, NotConfiguredArgs):
        raise JailerNotConfigured(
            f"{args.op}: this banger-helper was started without --jailer/--firecracker",
            hint=NOT_CONFIGURED_HINT,
        )
    from banger.vmm.firecracker.jailer import teardown_jail

    with _jail_lock:
        if isinstance(args, TeardownJailArgs):
            existed = teardown_jail(args.layout)
            log.info("teardown_jail: %s (existed=%s)", args.layout.jail_dir, existed)
            return {"jail_dir": str(args.layout.jail_dir), "removed": existed}
        return start_jailer(args.request, args.policy)


def _live_pid(root_fd: int, layout: JailLayout) -> int | None:
    from banger.procinfo import is_same_process, process_start_time
    from banger.vmm.firecracker.jailer import read_pid_file

    pid = read_pid_file(root_fd, layout.pid_name)
    if pid is None:
        return None
    start = process_start_time(pid)
    return pid if start is not None and is_same_process(pid, start) else None


def start_jailer(request: JailRequest, policy: JailerPolicy) -> dict[str, Any]:
    from banger.vmm.firecracker.jailer import (
        close_all,
        jail_layout,
        open_jail_root,
        open_sources,
        teardown_jail,
    )

    layout = jail_layout(request, policy)
    # Held from the check to the link: what is linked is what was checked.
    sources = open_sources(request, policy)
    try:
        old_root = open_jail_root(layout, create=False)
        if old_root is not None:
            try:
                pid = _live_pid(old_root, layout)
            finally:
                os.close(old_root)
            if pid is not None:
                raise Conflict(
                    f"{START_OP}: VM {request.vm_id} already runs in its jail (pid {pid})"
                )
            teardown_jail(layout)  # a dead VM's leftover jail
        try:
            return _start_in_jail(request, policy, layout, sources)
        except BaseException:
            teardown_jail(layout)
            raise
    finally:
        close_all(sources)


def _start_in_jail(
    request: JailRequest, policy: JailerPolicy, layout: JailLayout, sources: dict[Path, int]
) -> dict[str, Any]:
    from banger.procinfo import process_start_time
    from banger.vmm.firecracker.jailer import (
        jailer_argv,
        make_run_dir,
        open_jail_root,
        populate_jail,
    )

    root_fd = open_jail_root(layout, create=True)
    assert root_fd is not None  # create=True makes every directory or raises
    try:
        populate_jail(root_fd, layout, sources)
        # Firecracker (as the owner) binds its API socket here; the jail root stays root's.
        make_run_dir(root_fd, policy.uid, policy.gid)
        argv = jailer_argv(request, policy)
        try:
            proc.run(argv, timeout=JAILER_TIMEOUT)
        except CommandError as exc:
            raise HelperError(f"{START_OP}: the jailer failed: {exc.message}") from None
        pid = _wait_for_pid(root_fd, layout)
    finally:
        os.close(root_fd)
    start_time = process_start_time(pid)
    if start_time is None:
        raise HelperError(f"{START_OP}: Firecracker (pid {pid}) exited right after the jailer")
    log.info("start_jailer: VM %s pid %d in %s", request.vm_id, pid, layout.jail_dir)
    return {
        "pid": pid,
        "start_time": start_time,
        "socket": str(layout.socket),
        "jail_root": str(layout.root),
    }


def _wait_for_pid(root_fd: int, layout: JailLayout) -> int:
    """The pid the daemonized jailer wrote. A file has nothing to wait on: bounded backoff."""
    from banger.vmm.firecracker.jailer import read_pid_file

    deadline = time.monotonic() + PID_FILE_WAIT
    delay = 0.005
    while True:
        pid = read_pid_file(root_fd, layout.pid_name)
        if pid is not None:
            return pid
        if time.monotonic() > deadline:
            raise HelperError(
                f"{START_OP}: no pid file {layout.pid_file} within {PID_FILE_WAIT:g}s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def is_jailer_args(args: object) -> bool:
    return isinstance(args, StartJailerArgs | TeardownJailArgs | NotConfiguredArgs)


__all__ = [
    "JailerNotConfigured",
    "StartJailerArgs",
    "TeardownJailArgs",
    "is_jailer_args",
    "policy_from_flags",
    "run",
    "specs",
]
