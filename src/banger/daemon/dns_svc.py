"""DNSService: the VM resolver on the bridge, with sockets from the root helper.

Started the first time the bridge is ensured (``HostNetwork`` calls
:meth:`DNSService.ensure` after ``ensure_bridge``/``ensure_nat``), and again
after a daemon restart when VMs are still running. The helper binds
``<gateway>:53`` (``bind_dns``) and passes the descriptors; this process then
serves on them as the owner. ``resolver_link`` asks the helper to point
systemd-resolved at the bridge for ``~<domain>``; its answer is kept in
:attr:`DNSService.status` for ``doctor``.

A DNS failure never fails a VM start: guests lose name resolution, not their
network; the reason is logged and reported in the status.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banger.config import Config
from banger.errors import BangerError, NotFound
from banger.helper.client import HelperClient
from banger.net.dns import LOOPBACK, DNSServer, Resolver, ResolverSettings
from banger.net.upstreams import choose_upstreams
from banger.store import Store, VMState

log = logging.getLogger(__name__)

#: VMs in these states have no address a guest could reach.
_UNREACHABLE = (VMState.STOPPED, VMState.FAILED, VMState.DELETING)


@dataclass
class DNSStatus:
    serving: bool = False
    address: str | None = None
    upstreams: list[str] = field(default_factory=list)
    host_link: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class HostResolverLink:
    """What the helper did about the host's own resolver (systemd-resolved per-link DNS)."""

    configured: bool
    #: Why not, when ``configured`` is false (no systemd-resolved, no resolvectl, …).
    reason: str | None = None
    bridge: str | None = None
    dns: str | None = None
    domain: str | None = None

    @classmethod
    def from_helper(cls, reply: dict[str, Any]) -> HostResolverLink:
        def text(key: str) -> str | None:
            value = reply.get(key)
            return value if isinstance(value, str) else None

        return cls(
            configured=reply.get("configured") is True,
            reason=text("reason"),
            bridge=text("bridge"),
            dns=text("dns"),
            domain=text("domain"),
        )


@dataclass(frozen=True)
class DNSReport:
    """``GET /v1/dns``: the VM resolver as bangerd sees it (``banger doctor`` reads it).

    ``serving`` is false until the bridge is first ensured (the first VM start
    after bangerd started), or when starting it failed (``error`` says why).
    """

    serving: bool
    #: The bridge address it serves on (or will), port 53.
    address: str
    bridge: str
    domain: str
    upstreams: list[str]
    #: None until the resolver started and asked the helper.
    host_link: HostResolverLink | None
    error: str | None


def store_lookup(store: Store) -> Callable[[str], ipaddress.IPv4Address | None]:
    """``name -> address`` for VMs that are (being) up; the resolver calls it per query."""

    def lookup(name: str) -> ipaddress.IPv4Address | None:
        try:
            vm = store.get_vm_by_name(name)
        except NotFound:
            return None
        return None if vm.state in _UNREACHABLE else vm.ip

    return lookup


class DNSService:
    def __init__(self, config: Config, helper: HelperClient, store: Store) -> None:
        self.config = config
        self.helper = helper
        self.store = store
        self.status = DNSStatus()
        self._server: DNSServer | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_daemon(cls, config: Config, helper_socket: Path, store: Store) -> DNSService:
        return cls(config, HelperClient(helper_socket, timeout=30), store)

    def report(self) -> DNSReport:
        net = self.config.network
        status = self.status
        return DNSReport(
            serving=status.serving,
            address=str(net.gateway),
            bridge=net.bridge,
            domain=net.dns_domain,
            upstreams=list(status.upstreams),
            host_link=None
            if status.host_link is None
            else HostResolverLink.from_helper(status.host_link),
            error=status.error,
        )

    @property
    def gateway_cidr(self) -> str:
        net = self.config.network
        return f"{net.gateway}/{net.subnet.prefixlen}"

    async def ensure(self) -> None:
        """Serve DNS on the bridge if not already; errors are recorded, not raised."""
        async with self._lock:
            if self._server is not None:
                return
            try:
                await self._start()
            except Exception as exc:  # DNS must never fail the VM start that ensured the bridge
                message = exc.message if isinstance(exc, BangerError) else repr(exc)
                self.status = DNSStatus(error=message)
                log.warning("VM DNS not started: %s", message)

    async def _start(self) -> None:
        net = self.config.network
        _result, fds = await self.helper.acall_with_fds("bind_dns", cidr=self.gateway_cidr)
        udp, tcp = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
        upstreams = await asyncio.to_thread(
            choose_upstreams, net.dns_upstreams, listen=[net.gateway]
        )
        settings = ResolverSettings(
            domain=net.dns_domain, upstreams=upstreams, allowed=(net.subnet, *LOOPBACK)
        )
        server = DNSServer(Resolver(settings, store_lookup(self.store)), udp, tcp)
        try:
            await server.start()
        except BaseException:
            udp.close()
            tcp.close()
            raise
        self._server = server
        self.status = DNSStatus(
            serving=True, address=str(net.gateway), upstreams=[str(u) for u in upstreams]
        )
        try:
            self.status.host_link = await self.helper.acall(
                "resolver_link", bridge=net.bridge, cidr=self.gateway_cidr, domain=net.dns_domain
            )
        except BangerError as exc:
            self.status.host_link = {"configured": False, "reason": exc.message}
        log.info("VM DNS on %s:53, upstreams %s", net.gateway, self.status.upstreams or "none")

    async def close(self) -> bool:
        """Stop serving (shutdown, or the bridge is about to go); True if it was serving.

        The whole status goes: after a network cleanup the host link went with
        the bridge, and the next ensure starts and reports afresh.
        """
        async with self._lock:
            if self._server is None:
                return False
            await self._server.close()
            self._server = None
            self.status = DNSStatus()
            return True
