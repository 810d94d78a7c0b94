"""Where the VM resolver forwards names outside the VM domain.

``network.dns_upstreams`` in the config wins; otherwise the host's own
resolvers from ``/etc/resolv.conf``. A loopback stub such as systemd-resolved's
``127.0.0.53`` is kept: the daemon runs in the host's network namespace, so
the stub is reachable and keeps the host's split DNS (VPN domains). Only an
upstream that is the resolver's own listening address is dropped, because
forwarding to ourselves would loop.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_PORT = 53
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Upstream:
    """One upstream resolver: an address and a port (53 unless a test says otherwise)."""

    address: IPAddress
    port: int = DNS_PORT

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def parse_resolv_conf(text: str) -> tuple[IPAddress, ...]:
    """The ``nameserver`` addresses in resolv.conf text, in order, without duplicates.

    Malformed entries and IPv6 zone ids (``fe80::1%eth0``: link-local, not
    usable from another namespace) are skipped, as glibc skips them.
    """
    found: list[IPAddress] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver" or "%" in fields[1]:
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue
        if address not in found:
            found.append(address)
    return tuple(found)


def choose_upstreams(
    configured: Iterable[IPAddress],
    *,
    listen: Iterable[IPAddress] = (),
    resolv_conf: Path = HOST_RESOLV_CONF,
) -> tuple[Upstream, ...]:
    """The configured upstreams, else the host's; never one of our ``listen`` addresses."""
    own = set(listen)
    addresses = tuple(configured)
    if not addresses:
        try:
            addresses = parse_resolv_conf(resolv_conf.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            # No upstreams is survivable: VM names still resolve, the rest SERVFAILs.
            log.warning("dns: cannot read %s (%s); set network.dns_upstreams", resolv_conf, exc)
            addresses = ()
    return tuple(Upstream(a) for a in addresses if a not in own)
