"""Pure builders for the two systemd units: ``bangerd.service`` and ``banger-helper.service``.

Runtime layout the units set up (the CLI and the daemon find the sockets there
through ``BANGER_RUNTIME_DIR``)::

    /run/banger/                 root:<owner group> 0770  (helper's RuntimeDirectory)
    /run/banger/helper.sock      root:<owner group> 0660 (banger-helper --owner-gid)
    /run/banger/bangerd.sock     owner 0600               (bangerd)
    /var/log/banger/helper.log   root 0600                (helper's LogsDirectory)

The runtime directory is a parameter (``--runtime-dir``, under /run; the
helper's log directory takes the same name under /var/log) so that a test can
run the units' exact command lines without touching the real /run/banger.

The helper runs with ``Group=<owner group>`` so that systemd creates
``/run/banger`` group-owned by the owner: that is what lets the unprivileged
daemon put its own socket next to the helper's. ``RuntimeDirectoryPreserve``
keeps the directory (and the daemon's socket) when the helper restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from banger.paths import SYSTEM_RUNTIME_DIR

HELPER_UNIT = "banger-helper.service"
DAEMON_UNIT = "bangerd.service"
HELPER_LOG = Path("/var/log/banger/helper.log")
#: systemd's roots for ``RuntimeDirectory=`` and ``LogsDirectory=`` in system units.
RUN_ROOT = Path("/run")
LOG_ROOT = Path("/var/log")

#: The helper's capability bounding set, each with the reason it is needed.
HELPER_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("CAP_NET_ADMIN", "bridges, taps, addresses and nftables NAT rules"),
    ("CAP_SYS_ADMIN", "loop devices, device-mapper snapshots and image-build mounts"),
    ("CAP_CHOWN", "hand taps, loop devices and built files to the owner"),
    ("CAP_DAC_OVERRIDE", "open device nodes and the owner's files regardless of mode"),
    ("CAP_FOWNER", "chmod files the owner owns (disk images, sockets)"),
    ("CAP_SETUID", "the Firecracker jailer drops to the owner's uid"),
    ("CAP_SETGID", "the Firecracker jailer drops to the owner's gid"),
)
#: Added only when the helper runs the jailer (``firecracker.jailer = true``).
JAILER_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("CAP_MKNOD", "the jailer creates /dev/kvm and /dev/net/tun inside the jail"),
    ("CAP_SYS_CHROOT", "the jailer chroots Firecracker into the jail"),
)


@dataclass(frozen=True)
class ServiceLayout:
    """Everything the unit texts depend on; paths are as seen on the target system."""

    owner: str
    owner_uid: int
    owner_gid: int
    owner_group: str
    state_dir: Path
    bangerd: Path
    banger_helper: Path
    runtime_dir: Path = SYSTEM_RUNTIME_DIR
    helper_log: Path = HELPER_LOG
    #: ``--jailer J --firecracker F --jail-base B`` (absolute paths) when the owner runs
    #: Firecracker jailed.
    jailer_flags: tuple[str, ...] = ()

    @property
    def capabilities(self) -> tuple[tuple[str, str], ...]:
        return HELPER_CAPABILITIES + (JAILER_CAPABILITIES if self.jailer_flags else ())

    @property
    def jail_base(self) -> Path | None:
        """The jailer's chroot base (``--jail-base`` in :attr:`jailer_flags`), if jailed."""
        flags = list(self.jailer_flags)
        if "--jail-base" not in flags:
            return None
        return Path(flags[flags.index("--jail-base") + 1])

    @property
    def read_write_paths(self) -> tuple[Path, ...]:
        """``ReadWritePaths=``: the owner's state, and the jail base (root's) when jailed."""
        return (self.state_dir,) + ((self.jail_base,) if self.jail_base is not None else ())

    @property
    def helper_socket(self) -> Path:
        return self.runtime_dir / "helper.sock"

    @property
    def runtime_directory(self) -> str:
        """``RuntimeDirectory=``: the runtime dir relative to /run (systemd creates it)."""
        return str(self.runtime_dir.relative_to(RUN_ROOT))

    @property
    def logs_directory(self) -> str:
        """``LogsDirectory=``: the helper log's directory relative to /var/log."""
        return str(self.helper_log.parent.relative_to(LOG_ROOT))

    @property
    def daemon_socket(self) -> Path:
        return self.runtime_dir / "bangerd.sock"


def unit_quote(arg: str | Path) -> str:
    """Quote one word for an ``ExecStart=``/path-list line.

    ``%`` starts a specifier and ``$`` a variable in unit files, so both are
    doubled; words with blanks, quotes or backslashes are double-quoted.
    """
    text = str(arg).replace("%", "%%").replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec(argv: list[str | Path]) -> str:
    return " ".join(unit_quote(a) for a in argv)


def helper_exec_start(layout: ServiceLayout) -> list[str]:
    return [
        str(layout.banger_helper),
        "--socket",
        str(layout.helper_socket),
        "--owner-uid",
        str(layout.owner_uid),
        "--owner-gid",
        str(layout.owner_gid),
        "--allow-root",
        str(layout.state_dir),
        "--log",
        str(layout.helper_log),
        *layout.jailer_flags,
        # systemd supervises it: no double fork.
        "--foreground",
    ]


def daemon_exec_start(layout: ServiceLayout) -> list[str]:
    argv = [str(layout.bangerd)]
    if layout.owner_uid == 0:
        # bangerd refuses root unless told the owner really is root.
        argv.append("--allow-root")
    return argv


def helper_unit(layout: ServiceLayout) -> str:
    caps = "\n".join(f"#   {name}: {why}" for name, why in layout.capabilities)
    # The jailer writes the VM's cgroup (cpu/memory limits) under /sys/fs/cgroup.
    cgroups = "no" if layout.jailer_flags else "yes"
    return f"""\
# Generated by `banger system install` for {layout.owner}; reinstall rather than edit.
[Unit]
Description=banger root helper (privileged network and disk operations for {layout.owner})
Before={DAEMON_UNIT}

[Service]
Type=simple
ExecStart={_exec(list(helper_exec_start(layout)))}
# Root, but with the owner's group: systemd then creates {layout.runtime_dir} as
# root:{layout.owner_group} 0770, where bangerd (running as {layout.owner}) puts its socket.
Group={layout.owner_group}
RuntimeDirectory={unit_quote(layout.runtime_directory)}
RuntimeDirectoryMode=0770
RuntimeDirectoryPreserve=yes
LogsDirectory={unit_quote(layout.logs_directory)}
LogsDirectoryMode=0700
UMask=0077
Restart=on-failure
RestartSec=2

NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
# Writable: the owner's banger state (disk images, built trees) and, in jailer
# mode, the jail base (root's; `banger system install` creates it). The runtime
# and log directories above are writable by virtue of being declared.
ReadWritePaths={" ".join(unit_quote(p) for p in layout.read_write_paths)}
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups={cgroups}
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
# Not set, on purpose: PrivateDevices (needs /dev/net/tun, /dev/loop*,
# /dev/mapper), ProtectKernelTunables (enables IPv4 forwarding for NAT),
# RestrictNamespaces (the Firecracker jailer creates namespaces).
#
# Capabilities, and why each is needed:
{caps}
CapabilityBoundingSet={" ".join(name for name, _ in layout.capabilities)}

[Install]
WantedBy=multi-user.target
"""


def daemon_unit(layout: ServiceLayout) -> str:
    return f"""\
# Generated by `banger system install` for {layout.owner}; reinstall rather than edit.
[Unit]
Description=banger daemon (microVM orchestration for {layout.owner})
Wants={HELPER_UNIT}
After={HELPER_UNIT} network.target
RequiresMountsFor={unit_quote(layout.state_dir)}

[Service]
Type=simple
User={layout.owner}
Group={layout.owner_group}
Environment=BANGER_RUNTIME_DIR={unit_quote(layout.runtime_dir)}
ExecStart={_exec(list(daemon_exec_start(layout)))}
UMask=0077
Restart=on-failure
RestartSec=2
# SIGTERM to bangerd only. Guests must outlive a daemon restart: bangerd stops
# them itself when `daemon.stop_vms_on_shutdown` says so, and re-attaches to
# the survivors (pid + start time) when it starts again. KillMode=mixed would
# SIGKILL every VMM in the cgroup on each restart.
KillMode=process
TimeoutStopSec=60

# No privileges at all: everything privileged goes through the helper.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=full
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""
