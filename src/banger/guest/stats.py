"""Guest-side VM statistics: one POSIX sh script over SSH, ``key=value`` lines back.

The script reads ``/proc/loadavg``, ``/proc/meminfo`` and ``/proc/uptime``,
counts CPUs with ``nproc`` (``getconf`` as a fallback) and runs ``df -P -k``
on ``/`` and ``/root`` (the work disk), all under ``LC_ALL=C``. It needs
nothing beyond a POSIX shell and coreutils-or-busybox, so it works on the
fast-init images as well as on systemd ones. A missing piece is left out
rather than failing the whole report.

Output, one fact per line::

    load=0.08 0.03 0.01
    cpus=2
    uptime=123.45
    mem_total_kib=1004604
    mem_available_kib=873512
    df /=<total KiB> <used KiB> <available KiB> <mount point>
    df /root=...
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncssh import SSHClientConnection

from banger.errors import BangerError
from banger.guest.ssh import SSHTarget, open_connection, run_on

KIB = 1024

STATS_SCRIPT = r"""
export LC_ALL=C
read -r l1 l5 l15 _rest < /proc/loadavg && echo "load=$l1 $l5 $l15"
n=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null) && echo "cpus=$n"
read -r up _rest < /proc/uptime && echo "uptime=$up"
while read -r key value _unit; do
	case $key in
	MemTotal:) echo "mem_total_kib=$value" ;;
	MemAvailable:) echo "mem_available_kib=$value" ;;
	esac
done < /proc/meminfo
for path in / /root; do
	df -P -k "$path" 2>/dev/null | {
		read -r _header
		read -r _fs size used avail _cap mount && echo "df $path=$size $used $avail $mount"
	}
done
exit 0
"""


class GuestStatsError(BangerError):
    """The guest's stats report could not be read."""


@dataclass(frozen=True)
class GuestDisk:
    path: str  # what was asked: "/" or "/root"
    mount: str  # the filesystem it lives on ("/" if /root is not mounted)
    total_bytes: int
    used_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class GuestStats:
    load: tuple[float, float, float] | None
    cpus: int | None
    uptime_seconds: float | None
    mem_total_bytes: int | None
    mem_available_bytes: int | None
    disks: tuple[GuestDisk, ...]

    @property
    def mem_used_bytes(self) -> int | None:
        if self.mem_total_bytes is None or self.mem_available_bytes is None:
            return None
        return self.mem_total_bytes - self.mem_available_bytes

    def disk(self, path: str) -> GuestDisk | None:
        return next((d for d in self.disks if d.path == path), None)


def parse_guest_stats(text: str) -> GuestStats:
    """Parse the script's output; unknown keys and malformed lines are ignored."""
    values: dict[str, str] = {}
    disks: list[GuestDisk] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.startswith("df "):
            disk = _disk(key[3:], value)
            if disk is not None:
                disks.append(disk)
        else:
            values[key] = value.strip()
    return GuestStats(
        load=_load(values.get("load")),
        cpus=_int(values.get("cpus")),
        uptime_seconds=_float(values.get("uptime")),
        mem_total_bytes=_kib(values.get("mem_total_kib")),
        mem_available_bytes=_kib(values.get("mem_available_kib")),
        disks=tuple(disks),
    )


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _kib(text: str | None) -> int | None:
    value = _int(text)
    return None if value is None else value * KIB


def _load(text: str | None) -> tuple[float, float, float] | None:
    parts = (text or "").split()
    if len(parts) != 3:
        return None
    try:
        return float(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        return None


def _disk(path: str, value: str) -> GuestDisk | None:
    parts = value.split(None, 3)
    if len(parts) != 4:
        return None
    try:
        total, used, avail = (int(p) * KIB for p in parts[:3])
    except ValueError:
        return None
    return GuestDisk(path, parts[3], total, used, avail)


async def guest_stats(target: SSHTarget, *, timeout: float = 15.0) -> GuestStats:
    """Run the stats script in the guest (a new connection) and parse what it prints."""
    async with open_connection(target, timeout) as conn:
        return await guest_stats_on(conn, timeout=timeout)


async def guest_stats_on(conn: SSHClientConnection, *, timeout: float = 15.0) -> GuestStats:
    """:func:`guest_stats` over an open connection (bangerd's held one)."""
    result = await run_on(conn, ["sh", "-c", STATS_SCRIPT], timeout=timeout)
    if result.exit_status != 0:
        raise GuestStatsError(
            f"guest stats script exited {result.exit_status}: {result.err.strip()[-200:]}",
            hint="is the guest's /proc mounted? try `banger vm ssh` and run `cat /proc/meminfo`",
        )
    return parse_guest_stats(result.out)
