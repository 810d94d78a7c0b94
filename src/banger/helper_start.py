"""Start the root helper on first use when nothing is installed.

The commands that make or boot VMs (and ``image build``) need ``banger-helper``
(root). With ``banger system install`` it is a system service; without it, the
CLI starts one itself before the first such command, so a fresh machine works
at once:

- the helper's socket answers a ``ping``: nothing to do;
- banger is installed (``/etc/banger/install.toml``) or ``BANGER_NO_AUTOSTART=1``:
  never start anything — the service manager (or the test) owns the helper,
  and the daemon's own error names what is missing;
- the CLI runs as root: start ``banger-helper`` directly;
- ``sudo -n true`` works (cached credentials or NOPASSWD): start it with
  ``sudo -n``;
- otherwise: fail with one line naming the exact command to run.

The helper serves exactly this user (the daemon the CLI auto-starts runs as
the same user): ``--owner-uid`` is ours, ``--allow-root`` is our state
directory (every path a helper op takes — image builds, pulls — lies there),
and its log goes next to the daemon's. No ``--owner-gid``: the helper chowns
its socket to the owner and keeps it 0600, which is all one user needs (the
group-shared 0660 socket is for the system install's root-owned runtime dir).

``banger-helper`` binds its socket before it detaches and prints its pid, so
when the command returns the socket already accepts connections: no polling.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.errors import CommandError, HelperError
from banger.paths import Paths, check_private_dir, system_install

NO_AUTOSTART_ENV = "BANGER_NO_AUTOSTART"
#: Commands (group, name) whose daemon work calls the helper: they create or
#: boot VMs (bridge, tap, NAT), build images (root for file ownership) or
#: remove the bridge and NAT again.
NEEDS_HELPER = frozenset(
    {
        ("vm", "create"),
        ("vm", "start"),
        ("vm", "restart"),
        ("vm", "run"),
        ("image", "build"),
        ("image", "pull"),  # flattening OCI layers keeps owners: the helper does it
        ("pool", "set"),  # the pool boots its template guest and restores the others
        ("system", "cleanup-network"),
    }
)
#: Seconds ``banger-helper`` (or sudo) gets to bind and detach.
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class HelperStart:
    """How the helper was (or would be) started: the argv and whether sudo wraps it."""

    argv: tuple[str, ...]
    via_sudo: bool


def helper_command() -> list[str]:
    """The ``banger-helper`` next to this interpreter, else ``python -m`` (same code)."""
    script = Path(sys.executable).with_name("banger-helper")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "banger.helper.main"]


def helper_argv(
    paths: Paths,
    owner_uid: int,
    command: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The full ``banger-helper`` command line serving ``owner_uid`` for ``paths``.

    ``extra``: more flags, e.g. :func:`jailer_flags` (``--jailer … --firecracker …``).
    """
    return [
        *(helper_command() if command is None else command),
        "--socket",
        str(paths.helper_socket),
        "--owner-uid",
        str(owner_uid),
        "--allow-root",
        str(paths.state_dir),
        "--log",
        str(paths.helper_log),
        *extra,
    ]


def jailer_flags(paths: Paths) -> list[str]:
    """The owner's ``firecracker.jailer`` as helper flags.

    Resolved by :mod:`banger.vmm.firecracker.jailer_flags`.
    """
    from banger.config import load_config
    from banger.vmm.firecracker.jailer_flags import helper_jailer_flags

    return helper_jailer_flags(load_config(paths=paths).firecracker)


def manual_hint(argv: Sequence[str]) -> str:
    return (
        f"start it yourself: sudo {shlex.join(argv)}   "
        "(or install both services once: sudo banger system install --owner $USER)"
    )


def needs_helper(command_path: Sequence[str]) -> bool:
    """Whether ``banger <group> <name> …`` needs the helper (path without ``banger``)."""
    return tuple(command_path[:2]) in NEEDS_HELPER


def helper_answers(paths: Paths) -> bool:
    from banger.system.probes import probe_helper

    return probe_helper(paths.helper_socket).up


def passwordless_sudo() -> str | None:
    """sudo's path if ``sudo -n true`` works (no password prompt), else None."""
    from banger import proc

    # which() first: an unreadable directory on PATH makes exec fail with EACCES,
    # not "not found", and sudo's absence is the ordinary case, not an error.
    sudo = shutil.which("sudo")
    if sudo is None:
        return None
    try:
        proc.run([sudo, "-n", "true"], timeout=10)
    except CommandError:
        return None
    return sudo


def ensure_helper(paths: Paths) -> HelperStart | None:
    """Make sure a helper answers on ``paths.helper_socket``; start one if we may.

    Returns how it was started, or None when one was running already (or
    starting one is not ours to do). Raises :class:`HelperError` with the
    exact command to run when it cannot be started from here.
    """
    if os.environ.get(NO_AUTOSTART_ENV) == "1" or system_install() is not None:
        return None
    # The client's check, before probing: a helper is never started (as
    # root!) into a runtime directory that is another user's or squatted.
    check_private_dir(paths.runtime_dir)
    if helper_answers(paths):
        return None
    argv = helper_argv(paths, os.getuid(), extra=jailer_flags(paths))
    # Its log and socket live in our directories: make them ours before root
    # does — and before the hint below tells the user to start it by hand,
    # whose command needs them to exist.
    for d in (paths.state_dir, paths.runtime_dir):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    sudo = None if os.geteuid() == 0 else passwordless_sudo()
    if os.geteuid() == 0:
        start = HelperStart(tuple(argv), via_sudo=False)
    elif sudo is not None:
        start = HelperStart((sudo, "-n", *argv), via_sudo=True)
    else:
        why = "sudo needs a password" if shutil.which("sudo") else "sudo is not installed"
        raise HelperError(
            f"the root helper is not running (no answer on {paths.helper_socket}) and {why}",
            hint=manual_hint(argv),
        )
    _run(start, paths)
    return start


def _run(start: HelperStart, paths: Paths) -> None:
    from banger import proc

    try:
        result = proc.run(start.argv, timeout=START_TIMEOUT)
    except CommandError as exc:
        argv = start.argv[2:] if start.via_sudo else start.argv  # without "sudo -n"
        raise HelperError(
            f"could not start banger-helper: {exc.message}",
            hint=f"see {paths.helper_log}; or {manual_hint(argv)}",
        ) from None
    # banger-helper prints the pid of its detached server (the process that
    # bound the socket has exited: SO_PEERCRED would name that one). Kept so
    # the helper can be stopped: `kill $(cat helper.pid)` (with sudo if sudo started it).
    lines = result.out.strip().splitlines()
    pid = lines[-1] if lines and lines[-1].isdigit() else "?"
    if pid != "?":
        paths.helper_pidfile.write_text(pid + "\n")
    how = "with sudo" if start.via_sudo else "as root"
    print(
        f"started banger-helper {how} (pid {pid}, in {paths.helper_pidfile}; "
        f"log {paths.helper_log})",
        file=sys.stderr,
    )
