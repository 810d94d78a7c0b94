"""``banger system status``: is the two-service install whole and consistent?

Looks at the units (systemctl, when systemd runs), the sockets (present, a
socket, owned and moded as the units declare, answering), the versions (CLI,
install metadata, running daemon and helper: any disagreement is flagged) and
the last errors in each service's log. ``problems`` lists everything wrong;
the install is healthy when it is empty.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import banger
from banger.proc import run
from banger.system.install import metadata_path, read_metadata, systemd_running, under
from banger.system.metadata import InstallMetadata
from banger.system.probes import probe_daemon, probe_helper


@dataclass(frozen=True)
class UnitState:
    name: str
    path: str
    file_present: bool
    active: str | None  # systemctl is-active; None when systemd is not asked
    enabled: str | None


@dataclass(frozen=True)
class SocketState:
    name: str
    path: str
    present: bool
    uid: int | None
    gid: int | None
    mode: str | None
    expected: str
    layout_ok: bool
    answering: bool
    detail: str


@dataclass(frozen=True)
class StatusReport:
    installed: bool
    healthy: bool
    owner: str | None
    units: list[UnitState]
    sockets: list[SocketState]
    versions: dict[str, str | None]
    version_mismatch: bool
    log_errors: dict[str, list[str]]
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: A log line reporting an error: a logging level, a traceback, or ``error:`` as a
#: word — not inside a logger's name: every bangerd log has ``uvicorn.error:
#: Started server process``, which made every healthy status list an error
#: (found under a real systemd, tests/e2e/test_system_install_guest.py).
_ERROR_LINE = re.compile(r" ERROR | CRITICAL |Traceback|(?:^|\s)error:")


def error_lines(text: str, limit: int = 3) -> list[str]:
    """The last ``limit`` log lines that report an error."""
    hits = [line.strip() for line in text.splitlines() if _ERROR_LINE.search(line)]
    return hits[-limit:]


def _tail_errors(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            return error_lines(f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        return []
    except PermissionError:
        # The helper's log is root's in a 0700 directory (LogsDirectoryMode=), by
        # design: the owner running `system status` cannot read it, and reporting
        # that as a log error made every owner's healthy status show one (found
        # under a real systemd, tests/e2e/test_system_install_guest.py). Root sees it.
        return []
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror})"]


def _systemctl_word(*args: str) -> str:
    result = run(["systemctl", *args], timeout=10, check=False)
    return result.out.strip() or result.err.strip() or f"exit {result.returncode}"


def _unit_state(prefix: Path | None, target: str, ask_systemd: bool) -> UnitState:
    name = Path(target).name
    path = under(prefix, target)
    active = enabled = None
    if ask_systemd:
        active = _systemctl_word("is-active", name)
        enabled = _systemctl_word("is-enabled", name)
    return UnitState(name, str(path), path.is_file(), active, enabled)


def _socket_state(
    name: str, path: Path, uid: int, gid: int | None, mode: int, answering: bool, detail: str
) -> SocketState:
    expected = f"uid {uid}" + (f" gid {gid}" if gid is not None else "") + f" mode {mode:04o}"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return SocketState(name, str(path), False, None, None, None, expected, False, False, detail)
    actual_mode = stat.S_IMODE(st.st_mode)
    ok = (
        stat.S_ISSOCK(st.st_mode)
        and st.st_uid == uid
        and (gid is None or st.st_gid == gid)
        and actual_mode == mode
    )
    return SocketState(
        name, str(path), True, st.st_uid, st.st_gid, f"{actual_mode:04o}", expected, ok, answering,
        detail,
    )  # fmt: skip


def _versions(
    metadata: InstallMetadata, daemon: str | None, helper: str | None
) -> dict[str, str | None]:
    return {
        "cli": banger.__version__,
        "installed": metadata.version,
        "installed_daemon": metadata.daemon_version,
        "installed_helper": metadata.helper_version,
        "running_daemon": daemon,
        "running_helper": helper,
    }


def gather_status(prefix: Path | None = None) -> StatusReport:
    metadata = read_metadata(prefix)
    if metadata is None:
        where = metadata_path(prefix)
        return StatusReport(
            False, False, None, [], [], {"cli": banger.__version__}, False, {},
            [f"not installed: no {where}"],
        )  # fmt: skip
    problems: list[str] = []
    ask_systemd = prefix is None and systemd_running()
    units = [_unit_state(prefix, target, ask_systemd) for target in metadata.units]
    for unit in units:
        if not unit.file_present:
            problems.append(f"{unit.name}: unit file missing ({unit.path})")
        if unit.active is not None and unit.active != "active":
            problems.append(f"{unit.name}: {unit.active}")

    helper_path = under(prefix, metadata.paths.get("helper_socket", "/run/banger/helper.sock"))
    daemon_path = under(prefix, metadata.paths.get("daemon_socket", "/run/banger/bangerd.sock"))
    helper = probe_helper(helper_path, op="version")
    daemon = probe_daemon(daemon_path)
    sockets = [
        _socket_state(
            # With --owner-gid, banger-helper's socket is root:<owner's group> 0660.
            "helper",
            helper_path,
            0,
            metadata.owner_gid,
            0o660,
            helper.up,
            helper.detail,
        ),
        _socket_state(
            "daemon", daemon_path, metadata.owner_uid, None, 0o600, daemon.up, daemon.detail
        ),
    ]
    for sock in sockets:
        if not sock.present:
            problems.append(f"{sock.name} socket missing: {sock.path}")
            continue
        if not sock.layout_ok:
            problems.append(
                f"{sock.name} socket {sock.path}: uid {sock.uid} gid {sock.gid} mode {sock.mode},"
                f" expected {sock.expected}"
            )
        if not sock.answering:
            problems.append(f"{sock.name}: {sock.detail}")

    versions = _versions(metadata, daemon.version, helper.version)
    known = {v for v in versions.values() if v is not None}
    mismatch = len(known) > 1
    if mismatch:
        listed = ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        problems.append(f"version mismatch: {listed}")

    log_errors = {
        name: _tail_errors(under(prefix, metadata.paths[f"{name}_log"]))
        for name in ("helper", "daemon")
        if f"{name}_log" in metadata.paths
    }
    return StatusReport(
        True, not problems, metadata.owner, units, sockets, versions, mismatch, log_errors,
        problems,
    )  # fmt: skip
