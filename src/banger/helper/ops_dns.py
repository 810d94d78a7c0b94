"""The helper's DNS ops: bind the resolver's port 53, link the host resolver to it.

``bind_dns(cidr)`` binds UDP and TCP sockets on ``<gateway>:53`` and hands both
descriptors to the owner daemon (SCM_RIGHTS), which serves DNS on them without
ever holding privilege: ports below 1024 need ``CAP_NET_BIND_SERVICE``. The
address must be the exact address (and prefix) of a banger-managed bridge, so
the owner cannot use the helper to take port 53 on any other interface.

``resolver_link(bridge, cidr, domain)`` points systemd-resolved at the bridge
for ``~<domain>`` (per-link DNS server, routing-only domain, not a default
route), so host programs resolve ``<vm>.<domain>`` while every other name keeps
using the host's own servers. Hosts without systemd-resolved get
``{"configured": false, "reason": ...}`` and ``banger doctor`` explains what to
set up by hand.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from banger.errors import CommandError, Conflict, NotFound
from banger.helper.links import all_links, find_link, is_banger_bridge
from banger.proc import run

log = logging.getLogger(__name__)

DNS_PORT = 53
RESOLVED_RUN_DIR = Path("/run/systemd/resolve")


def bridge_holding(ipr: IPRoute, gateway: ipaddress.IPv4Interface) -> str:
    """The banger bridge that carries exactly ``gateway``; refuse any other interface."""
    bridges = {link.index: link.name for link in all_links(ipr) if is_banger_bridge(link)}
    for addr in ipr.get_addr(family=socket.AF_INET):
        current = ipaddress.IPv4Interface(f"{addr.get('address')}/{addr['prefixlen']}")
        if current.ip != gateway.ip:
            continue
        name = bridges.get(addr["index"])
        if name is None:
            raise Conflict(
                f"{gateway.ip} is not on a banger bridge",
                hint="bind_dns only binds the gateway address of banger's own bridge",
            )
        if current != gateway:
            raise Conflict(f"{gateway.ip} is on {name} as {current}, not {gateway}")
        return name
    raise NotFound(
        f"no interface has the address {gateway.ip}", hint="call ensure_bridge before bind_dns"
    )


def bind_dns(gateway: ipaddress.IPv4Interface) -> tuple[dict[str, Any], list[int]]:
    """UDP and TCP sockets bound on ``gateway:53`` (TCP not yet listening), as fds."""
    with IPRoute() as ipr:
        bridge = bridge_holding(ipr, gateway)
    where = (str(gateway.ip), DNS_PORT)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # a restarted daemon rebinds while old connections sit in TIME_WAIT
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind(where)
            tcp.bind(where)
        except OSError as exc:
            raise Conflict(
                f"cannot bind {gateway.ip}:{DNS_PORT}: {exc.strerror}",
                hint="another DNS server (dnsmasq?) holds port 53 on the bridge; stop it",
            ) from None
    except BaseException:
        udp.close()
        tcp.close()
        raise
    log.info("bind_dns: bound udp+tcp %s:%d on %s", gateway.ip, DNS_PORT, bridge)
    result = {"address": str(gateway.ip), "port": DNS_PORT, "bridge": bridge, "fds": ["udp", "tcp"]}
    return result, [udp.detach(), tcp.detach()]


def resolver_link(
    bridge: str,
    gateway: ipaddress.IPv4Interface,
    domain: str,
    *,
    run_dir: Path = RESOLVED_RUN_DIR,
    resolvectl: str = "resolvectl",
) -> dict[str, Any]:
    """Route ``~domain`` lookups on the host to ``gateway`` via systemd-resolved."""
    if not run_dir.is_dir():
        return {"configured": False, "reason": f"systemd-resolved is not running (no {run_dir})"}
    program = shutil.which(resolvectl)
    if program is None:
        return {"configured": False, "reason": f"{resolvectl} is not installed"}
    with IPRoute() as ipr:
        link = find_link(ipr, bridge)
        if link is None:
            raise NotFound(f"bridge {bridge} does not exist", hint="call ensure_bridge first")
        if bridge_holding(ipr, gateway) != bridge:
            raise Conflict(f"{gateway} is not the address of {bridge}")
    run([program, "dns", bridge, str(gateway.ip)], timeout=10)
    run([program, "domain", bridge, f"~{domain}"], timeout=10)
    try:
        # routing-only domains already keep the link off the default route;
        # saying so explicitly guards against a resolved that guesses otherwise
        run([program, "default-route", bridge, "false"], timeout=10)
    except CommandError as exc:
        log.warning("resolver_link: default-route not set on %s: %s", bridge, exc)
    log.info("resolver_link: ~%s on %s -> %s", domain, bridge, gateway.ip)
    return {"configured": True, "bridge": bridge, "dns": str(gateway.ip), "domain": f"~{domain}"}
