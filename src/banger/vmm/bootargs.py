"""The guest kernel command line (the "guest boot contract" in docs/ARCHITECTURE.md).

The daemon says what the guest needs to know (:class:`BootSpec`, driver-neutral);
each VMM driver turns it into its own line in ``VMMDriver.adapt_spec``, adding its
own tokens (``driver_args``: Firecracker's ``reboot=k``) and keeping the host TSC
frequency only for a guest it runs under software emulation (QEMU's TCG).

:func:`kernel_cmdline` is a pure builder. Every piece is validated before it is
placed, because the command line is parsed by the guest's initramfs and init as
whitespace-separated ``key=value`` tokens: a hostname such as ``x init=/bin/sh``
would otherwise hand the guest a different PID 1. Nothing free-form is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from banger.errors import InvalidArgument

InitMode = Literal["systemd", "fast"]

#: x86 ``COMMAND_LINE_SIZE`` is 2048 bytes including the NUL.
CMDLINE_MAX = 2047
#: PID 1 installed by the image finalize step for init mode ``fast``.
FAST_INIT = "/sbin/banger-fast-init"
#: The work disk is the second virtio-blk device (root is attached first).
WORK_DEVICE = "/dev/vdb"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
#: A driver's own token: ``key`` or ``key=value``, nothing the guest could split further.
_DRIVER_ARG = re.compile(r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:/-]+)?")


@dataclass(frozen=True)
class BootSpec:
    """What a guest needs to know at boot, whichever VMM runs it (the daemon's part).

    Addresses may be strings or parsed.
    """

    ip: ipaddress.IPv4Address | str
    gateway: ipaddress.IPv4Address | str
    prefix: int
    hostname: str
    dns: ipaddress.IPv4Address | str
    init_mode: InitMode = "systemd"
    #: The host TSC frequency in kHz, for a guest under TCG (software emulation):
    #: its PIT-based calibration can fail there and hang the boot. A driver that
    #: never emulates (Firecracker: KVM only) drops it.
    tsc_khz: int | None = None


def _ipv4(field: str, value: ipaddress.IPv4Address | str) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise InvalidArgument(
            f"{field}: not an IPv4 address: {value!r}", hint="use dotted form, e.g. 172.30.0.2"
        ) from None


def check_hostname(hostname: str) -> str:
    """A hostname for the guest must be one DNS label (letters, digits, inner hyphens)."""
    if not isinstance(hostname, str) or not _DNS_LABEL.fullmatch(hostname):
        raise InvalidArgument(
            f"hostname: not a DNS label: {hostname!r}",
            hint="use 1-63 letters, digits or hyphens, not starting or ending with a hyphen",
        )
    return hostname


def kernel_cmdline(spec: BootSpec, *, driver_args: Sequence[str] = ()) -> str:
    """The kernel command line for ``spec``; raises :class:`InvalidArgument` on bad input.

    ``driver_args`` are the VMM driver's own tokens (Firecracker's ``reboot=k``),
    placed after the common head (console, root, panic) and before the guest
    contract's.
    """
    ip = _ipv4("ip", spec.ip)
    gateway = _ipv4("gateway", spec.gateway)
    dns = _ipv4("dns", spec.dns)
    hostname = check_hostname(spec.hostname)
    if isinstance(spec.prefix, bool) or not isinstance(spec.prefix, int):
        raise InvalidArgument(f"prefix: not an integer: {spec.prefix!r}")
    if not 1 <= spec.prefix <= 30:
        raise InvalidArgument(f"prefix: must be between 1 and 30, got {spec.prefix}")
    network = ipaddress.IPv4Network(f"{ip}/{spec.prefix}", strict=False)
    if gateway not in network:
        raise InvalidArgument(f"gateway: {gateway} is outside the guest network {network}")
    if ip == gateway:
        raise InvalidArgument(f"ip: {ip} is the gateway address")
    if ip in (network.network_address, network.broadcast_address):
        raise InvalidArgument(f"ip: {ip} is not a host address of {network}")
    if spec.init_mode not in ("systemd", "fast"):
        raise InvalidArgument(f"init_mode: must be 'systemd' or 'fast', got {spec.init_mode!r}")
    for arg in driver_args:
        if not isinstance(arg, str) or not _DRIVER_ARG.fullmatch(arg):
            raise InvalidArgument(f"driver_args: not a key or key=value token: {arg!r}")
    if spec.tsc_khz is not None and (
        isinstance(spec.tsc_khz, bool)
        or not isinstance(spec.tsc_khz, int)
        or not 1_000 <= spec.tsc_khz <= 100_000_000
    ):
        raise InvalidArgument(f"tsc_khz: not a plausible TSC frequency in kHz: {spec.tsc_khz!r}")

    # pty.legacy_count=0: no BSD pseudo-terminals (/dev/ptyp*, nothing uses them;
    # terminals are /dev/pts). A kernel with CONFIG_LEGACY_PTYS (kernel build's)
    # otherwise registers 256 pairs at boot, 0.13 s of the microVM kernel's ~0.7 s
    # under emulation; a kernel without it ignores the option.
    tokens = [
        "console=ttyS0",
        "root=/dev/vda",
        "rw",
        "net.ifnames=0",
        "panic=-1",
        "pty.legacy_count=0",
    ]
    tokens += driver_args
    tokens += [
        # The netmask dotted: a kernel with IP_PNP (`banger kernel build`'s, no
        # initramfs) applies ip= itself and would read "24" as the mask 24.0.0.0;
        # banger's initramfs takes either form.
        f"ip={ip}::{gateway}:{network.netmask}:{hostname}:eth0:off:{dns}",
        f"banger.work={WORK_DEVICE}",
        f"systemd.hostname={hostname}",
    ]
    if spec.init_mode == "fast":
        tokens.append(f"init={FAST_INIT}")
    if spec.tsc_khz is not None:
        # Under TCG the PIT-based TSC calibration can fail and hang the boot.
        tokens += [f"tsc_early_khz={spec.tsc_khz}", "tsc=reliable"]
    line = " ".join(tokens)
    if len(line) > CMDLINE_MAX:
        raise InvalidArgument(f"kernel command line is {len(line)} bytes, over {CMDLINE_MAX}")
    return line


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host CPU frequency in kHz from ``cpu MHz`` (under TCG the guest TSC runs at it)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "cpu MHz":
            try:
                return int(float(value.strip()) * 1000)
            except ValueError:
                return None
    return None
