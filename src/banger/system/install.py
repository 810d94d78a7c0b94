"""``banger system install / uninstall / restart``: files, then systemctl.

With ``prefix`` every target path is written under that directory instead of
``/`` and systemctl is not touched: that is how packages are built, and how
the tests exercise install and uninstall on a machine without systemd.
Without a prefix the real system is changed, which needs root and systemd as
PID 1; both are checked first with a clear message.

Idempotent: a file is only rewritten when its content changes, and the
metadata keeps its original install time when nothing else changed, so a
second install leaves the tree byte-for-byte (and mtime-for-mtime) the same.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import banger
from banger.errors import BangerError, InvalidArgument, NotFound
from banger.paths import INSTALL_METADATA, SYSTEM_RUNTIME_DIR, Paths, install_metadata_path
from banger.proc import run
from banger.system.metadata import InstallMetadata
from banger.system.units import (
    DAEMON_UNIT,
    HELPER_UNIT,
    LOG_ROOT,
    RUN_ROOT,
    ServiceLayout,
    daemon_unit,
    helper_unit,
)

UNIT_DIR = Path("/etc/systemd/system")
SYSTEMCTL_TIMEOUT = 90.0
BINARIES = ("banger", "bangerd", "banger-helper")


@dataclass(frozen=True)
class Owner:
    name: str
    uid: int
    gid: int
    group: str
    home: Path


@dataclass(frozen=True)
class InstallResult:
    metadata: InstallMetadata
    written: tuple[Path, ...]
    unchanged: tuple[Path, ...]
    systemd: bool


def resolve_owner(name: str | None) -> Owner:
    """The named user, else the user who ran sudo, else the current user."""
    if name is None:
        name = os.environ.get("SUDO_USER") if os.geteuid() == 0 else None
    try:
        pw = pwd.getpwnam(name) if name else pwd.getpwuid(os.getuid())
    except KeyError:
        raise InvalidArgument(f"--owner {name}: no such user") from None
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return Owner(pw.pw_name, pw.pw_uid, pw.pw_gid, group, Path(pw.pw_dir))


def find_binaries() -> dict[str, Path]:
    """banger's console scripts: next to this interpreter (a venv), else on PATH."""
    found: dict[str, Path] = {}
    here = Path(sys.executable).parent
    for name in BINARIES:
        candidate = here / name
        which = shutil.which(name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found[name] = candidate.absolute()
        elif which:
            found[name] = Path(which)
        else:
            raise NotFound(
                f"cannot find the {name} program",
                hint="install banger so its console scripts are on PATH",
            )
    return found


def check_runtime_dir(path: Path) -> Path:
    """A runtime directory systemd can create for a system unit: strictly under /run."""
    path = Path(os.path.normpath(path))
    if not path.is_absolute() or path == RUN_ROOT or not path.is_relative_to(RUN_ROOT):
        raise InvalidArgument(
            f"--runtime-dir {path}: must be a directory under {RUN_ROOT}",
            hint="systemd creates it from the helper unit's RuntimeDirectory=, which is "
            f"relative to {RUN_ROOT}; the default is {SYSTEM_RUNTIME_DIR}",
        )
    return path


def owner_paths(owner: Owner, runtime_dir: Path = SYSTEM_RUNTIME_DIR) -> Paths:
    """The owner's banger layout as the services see it (sockets under ``runtime_dir``)."""
    env = {"HOME": str(owner.home), "BANGER_RUNTIME_DIR": str(runtime_dir)}
    return Paths.from_env(env, home=owner.home)


def owner_jailer_flags(owner: Owner) -> tuple[str, ...]:
    """The owner's ``firecracker.jailer`` setting as helper flags.

    Resolved by :mod:`banger.vmm.firecracker.jailer_flags`.
    """
    from banger.config import load_config
    from banger.vmm.firecracker.jailer_flags import helper_jailer_flags

    paths = owner_paths(owner)
    config = load_config(paths.config_file, home=owner.home)
    return tuple(helper_jailer_flags(config.firecracker))


def build_layout(
    owner: Owner, binaries: dict[str, Path], runtime_dir: Path = SYSTEM_RUNTIME_DIR
) -> ServiceLayout:
    runtime_dir = check_runtime_dir(runtime_dir)
    return ServiceLayout(
        owner=owner.name,
        owner_uid=owner.uid,
        owner_gid=owner.gid,
        owner_group=owner.group,
        state_dir=owner_paths(owner).state_dir,
        bangerd=binaries["bangerd"],
        banger_helper=binaries["banger-helper"],
        jailer_flags=owner_jailer_flags(owner),
        runtime_dir=runtime_dir,
        # /run/<name> -> /var/log/<name>/helper.log: one name for both.
        helper_log=LOG_ROOT / runtime_dir.relative_to(RUN_ROOT) / "helper.log",
    )


def build_metadata(
    owner: Owner, binaries: dict[str, Path], layout: ServiceLayout, now: datetime
) -> InstallMetadata:
    paths = owner_paths(owner)
    return InstallMetadata(
        owner=owner.name,
        owner_uid=owner.uid,
        owner_gid=owner.gid,
        version=banger.__version__,
        installed_at=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        daemon_version=banger.__version__,
        helper_version=banger.__version__,
        paths={
            "config_dir": str(paths.config_dir),
            "state_dir": str(paths.state_dir),
            "cache_dir": str(paths.cache_dir),
            "runtime_dir": str(layout.runtime_dir),
            "daemon_socket": str(layout.daemon_socket),
            "helper_socket": str(layout.helper_socket),
            "daemon_log": str(paths.daemon_log),
            "helper_log": str(layout.helper_log),
        },
        binaries={name: str(path) for name, path in binaries.items()},
        units=(str(UNIT_DIR / HELPER_UNIT), str(UNIT_DIR / DAEMON_UNIT)),
    )


def under(prefix: Path | None, path: Path | str) -> Path:
    """``path`` (absolute, on the target system) as seen from here."""
    path = Path(path)
    return prefix / path.relative_to("/") if prefix is not None else path


def systemd_running() -> bool:
    """sd_booted(): systemd creates this directory only when it is PID 1."""
    return Path("/run/systemd/system").is_dir()


def _pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def require_real_system() -> None:
    if not systemd_running():
        raise BangerError(
            f"systemd is not running as PID 1 here (PID 1 is {_pid1_name()}): "
            "cannot install system services",
            hint="use --prefix DIR to only write the files (for packaging); without an "
            "install the CLI starts bangerd itself",
        )
    if os.geteuid() != 0:
        raise BangerError("installing system services needs root", hint="run it with sudo")


def metadata_target(prefix: Path | None) -> Path:
    """``install.toml`` on the target system: with no prefix, where the CLI looks for it."""
    return INSTALL_METADATA if prefix is not None else install_metadata_path()


def metadata_path(prefix: Path | None) -> Path:
    """``install.toml`` as seen from here."""
    return under(prefix, metadata_target(prefix))


def read_metadata(prefix: Path | None) -> InstallMetadata | None:
    path = metadata_path(prefix)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BangerError(
            f"{path}: cannot read the install metadata: {exc.strerror}",
            hint="it should be world-readable (0644); reinstall with `sudo banger system install`",
        ) from None
    return InstallMetadata.from_toml(text, str(path))


def _make_dirs(path: Path, created: list[Path]) -> None:
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        created.append(d)


def _write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _ensure_owner_state_dir(owner: Owner, state_dir: Path) -> None:
    """The helper's ``--allow-root`` and ``ReadWritePaths`` need it to exist."""
    missing: list[Path] = []
    path = state_dir
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700)
        os.chown(d, owner.uid, owner.gid)


def systemctl(*args: str) -> None:
    run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT)


def install(
    owner: Owner,
    prefix: Path | None,
    *,
    binaries: dict[str, Path] | None = None,
    now: datetime | None = None,
    runtime_dir: Path = SYSTEM_RUNTIME_DIR,
) -> InstallResult:
    if prefix is None:
        require_real_system()
    elif not prefix.is_dir():
        raise InvalidArgument(f"--prefix {prefix}: not a directory")
    binaries = binaries or find_binaries()
    layout = build_layout(owner, binaries, runtime_dir)
    metadata = build_metadata(owner, binaries, layout, now or datetime.now(UTC))
    previous = read_metadata(prefix)
    files = {
        UNIT_DIR / HELPER_UNIT: helper_unit(layout),
        UNIT_DIR / DAEMON_UNIT: daemon_unit(layout),
    }
    created: list[Path] = []
    meta_target = metadata_target(prefix)
    for target in [*files, meta_target]:
        _make_dirs(under(prefix, target).parent, created)
    created_dirs = (
        *(previous.created_dirs if previous else ()),
        *("/" + str(d.relative_to(prefix)) if prefix is not None else str(d) for d in created),
    )
    metadata = replace(metadata, created_dirs=created_dirs)
    if previous is not None and replace(previous, installed_at=metadata.installed_at) == metadata:
        metadata = previous  # nothing changed: keep the original install time
    files[meta_target] = metadata.to_toml()

    written: list[Path] = []
    unchanged: list[Path] = []
    for target, content in files.items():
        path = under(prefix, target)
        (written if _write_if_changed(path, content) else unchanged).append(path)

    if prefix is None:
        _ensure_owner_state_dir(owner, layout.state_dir)
        if layout.jail_base is not None:
            # ProtectSystem=strict: the unit's ReadWritePaths needs it before the helper runs.
            from banger.vmm.firecracker.jailer import check_jail_base

            check_jail_base(layout.jail_base)
        systemctl("daemon-reload")
        systemctl("enable", HELPER_UNIT, DAEMON_UNIT)
        # Helper first: it creates /run/banger, where the daemon's socket goes.
        verb = "restart" if written else "start"
        systemctl(verb, HELPER_UNIT)
        systemctl(verb, DAEMON_UNIT)
    return InstallResult(metadata, tuple(written), tuple(unchanged), prefix is None)


def restart() -> None:
    require_real_system()
    if read_metadata(None) is None:
        raise NotFound(
            "banger is not installed as a system service", hint="sudo banger system install"
        )
    systemctl("restart", HELPER_UNIT)
    systemctl("restart", DAEMON_UNIT)


def purge_targets(metadata: InstallMetadata) -> list[Path]:
    """What ``--purge`` deletes: the owner's state and cache, logs, runtime dir.

    The owner's config directory is theirs and is kept.
    """
    keys = ("state_dir", "cache_dir", "runtime_dir")
    paths = [Path(metadata.paths[k]) for k in keys if k in metadata.paths]
    if "helper_log" in metadata.paths:
        paths.append(Path(metadata.paths["helper_log"]).parent)
    return paths


def uninstall(prefix: Path | None, *, purge: bool = False) -> list[Path]:
    """Stop and remove the services; returns the paths removed."""
    if prefix is None:
        require_real_system()
    metadata = read_metadata(prefix)
    if metadata is None:
        raise NotFound(f"banger is not installed as a system service (no {metadata_path(prefix)})")
    if prefix is None:
        # Daemon first: it still uses the helper while stopping its VMs.
        run(["systemctl", "disable", "--now", DAEMON_UNIT], timeout=SYSTEMCTL_TIMEOUT, check=False)
        run(["systemctl", "disable", "--now", HELPER_UNIT], timeout=SYSTEMCTL_TIMEOUT, check=False)
    removed: list[Path] = []
    for unit_file in [*metadata.units, str(metadata_target(prefix))]:
        path = under(prefix, unit_file)
        if path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path)
    for d in sorted(metadata.created_dirs, key=lambda p: p.count("/"), reverse=True):
        path = under(prefix, d)
        try:
            path.rmdir()  # only if empty: someone else may have put files there since
            removed.append(path)
        except OSError:
            pass
    # The helper's RuntimeDirectory: RuntimeDirectoryPreserve= keeps it (root:<owner
    # group>) after the units stop, and systemd never removes it once they are gone.
    # Holding nothing after the services stopped (their sockets go with them), it is
    # not data: removed when empty, left alone otherwise.
    runtime_dir = metadata.paths.get("runtime_dir")
    if runtime_dir and Path(runtime_dir).is_relative_to(RUN_ROOT):
        path = under(prefix, runtime_dir)
        try:
            path.rmdir()
            removed.append(path)
        except OSError:
            pass
    if purge:
        for target in purge_targets(metadata):
            if not target.name.startswith("banger"):
                # Never rmtree what the metadata claims without the name we gave it.
                continue
            path = under(prefix, target)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(path)
    if prefix is None:
        systemctl("daemon-reload")
    return removed
