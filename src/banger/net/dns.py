"""The VM resolver: ``<vm>.<domain>`` from the store, everything else forwarded.

bangerd serves it on the bridge address, port 53. Binding that port needs
privilege, so the server never binds: it is given already-bound UDP and TCP
sockets (the root helper's ``bind_dns`` op makes them; tests bind their own on
loopback).

Answers, per query:

- from a source outside ``allowed`` (the VM subnet and loopback): REFUSED.
  This is not an open resolver;
- ``<name>.<domain>`` for a VM the lookup knows: its address for A, an empty
  NOERROR (with the zone's SOA, so the "no data" can be cached) for any other
  type — getent asks for AAAA too;
- any other name in the domain: NXDOMAIN with the SOA;
- everything else: forwarded to the upstreams in order, over UDP with a TCP
  retry on truncation. Replies are cached by (name, type, class) for their
  TTL (negative replies for the SOA minimum), in a bounded LRU; an upstream
  that fails or times out moves on to the next, and when none answers within
  the time budget the client gets SERVFAIL, never silence.

VM answers carry a short TTL: a VM's address can change when it is recreated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from banger.net.upstreams import Upstream

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Name (one lowercase label, the VM name) to its current address, or None.
Lookup = Callable[[str], ipaddress.IPv4Address | None]

LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))
CLASSIC_UDP_SIZE = 512
OUR_UDP_PAYLOAD = 1232  # the DNS flag day 2020 size: no IP fragmentation
MAX_CACHE_TTL = 3600
TCP_IDLE_SECONDS = 10.0
MAX_INFLIGHT = 256


@dataclass(frozen=True)
class ResolverSettings:
    domain: str
    upstreams: tuple[Upstream, ...]
    #: Sources that may query; everyone else gets REFUSED.
    allowed: tuple[IPNetwork, ...] = LOOPBACK
    #: TTL of VM answers and of NXDOMAIN for the VM domain.
    local_ttl: int = 5
    #: Whole budget for forwarding one query, across all upstreams.
    upstream_timeout: float = 2.0
    cache_size: int = 1024


@dataclass
class _Entry:
    wire: bytes
    stored: float
    expires: float


@dataclass
class ReplyCache:
    """Upstream replies by (name, type, class); TTLs age while cached."""

    size: int
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[tuple[dns.name.Name, int, int], _Entry] = field(
        default_factory=OrderedDict
    )

    def get(self, key: tuple[dns.name.Name, int, int]) -> dns.message.Message | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        message = dns.message.from_wire(entry.wire)
        elapsed = int(now - entry.stored)
        for section in (message.answer, message.authority, message.additional):
            for rrset in section:
                rrset.ttl = max(0, rrset.ttl - elapsed)
        return message

    def put(self, key: tuple[dns.name.Name, int, int], reply: dns.message.Message) -> None:
        ttl = cache_ttl(reply)
        if ttl <= 0 or self.size <= 0:
            return
        now = self.clock()
        self._entries[key] = _Entry(reply.to_wire(), now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def cache_ttl(reply: dns.message.Message) -> int:
    """How long ``reply`` may be reused: 0 for failures and TTL-less negatives."""
    rcode = reply.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or reply.flags & dns.flags.TC:
        return 0
    if rcode == dns.rcode.NOERROR and reply.answer:
        return min(MAX_CACHE_TTL, *(rrset.ttl for rrset in reply.answer))
    for rrset in reply.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            minimum = int(rrset[0].minimum)  # RFC 2308: min(SOA TTL, SOA MINIMUM)
            return min(MAX_CACHE_TTL, rrset.ttl, minimum)
    return 0


class Resolver:
    """Turns one query (wire bytes + source address) into one reply."""

    def __init__(
        self, settings: ResolverSettings, lookup: Lookup, *, cache: ReplyCache | None = None
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.origin = dns.name.from_text(settings.domain)
        self.cache = cache if cache is not None else ReplyCache(settings.cache_size)
        self._soa = dns.rrset.from_text(
            self.origin,
            settings.local_ttl,
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            f"ns.{self.origin} hostmaster.{self.origin} 1 3600 600 86400 {settings.local_ttl}",
        )

    def allowed(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in net for net in self.settings.allowed)

    async def reply(self, wire: bytes, source: str, *, max_size: int | None) -> bytes | None:
        """The reply's wire form, or None for input not worth answering.

        ``max_size`` None means TCP (no limit); over UDP the client's EDNS
        payload (512 without EDNS) caps the reply, truncated with TC set.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        if query.flags & dns.flags.QR:
            return None  # a response sent to us: never answer one (reflection loops)
        response = await self._answer(query, source)
        # make_response copied the client's EDNS payload into request_payload,
        # which to_wire would otherwise apply over TCP too
        limit = 65535
        if max_size is not None:
            payload = query.payload if query.edns >= 0 else CLASSIC_UDP_SIZE
            limit = max(CLASSIC_UDP_SIZE, min(payload, max_size))
        return response.to_wire(max_size=limit, prefer_truncation=True)

    async def _answer(self, query: dns.message.Message, source: str) -> dns.message.Message:
        response = dns.message.make_response(
            query, recursion_available=True, our_payload=OUR_UDP_PAYLOAD
        )
        if not self.allowed(source):
            log.debug("dns: refused query from %s", source)
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        if question.name.is_subdomain(self.origin):
            self._answer_local(question.name, question.rdtype, question.rdclass, response)
        else:
            await self._forward(question.name, question.rdtype, question.rdclass, response)
        return response

    def _answer_local(
        self, name: dns.name.Name, rdtype: int, rdclass: int, response: dns.message.Message
    ) -> None:
        response.flags |= dns.flags.AA
        labels = name.relativize(self.origin).labels
        if not labels:  # the domain apex itself exists but holds only the SOA
            if rdtype == dns.rdatatype.SOA:
                response.answer.append(self._soa)
            else:
                response.authority.append(self._soa)
            return
        address = None
        if len(labels) == 1 and rdclass == dns.rdataclass.IN:
            try:
                vm = labels[0].decode("ascii").lower()
            except UnicodeDecodeError:
                vm = ""
            address = self.lookup(vm) if vm else None
        if address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa)
        elif rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            response.answer.append(
                dns.rrset.from_text(
                    name, self.settings.local_ttl, dns.rdataclass.IN, dns.rdatatype.A, str(address)
                )
            )
        else:
            response.authority.append(self._soa)

    async def _forward(
        self, name: dns.name.Name, rdtype: int, rdclass: int, response: dns.message.Message
    ) -> None:
        key = (name.canonicalize(), rdtype, rdclass)
        upstream_reply = self.cache.get(key)
        if upstream_reply is None:
            upstream_reply = await self._ask_upstreams(name, rdtype, rdclass)
            if upstream_reply is None:
                response.set_rcode(dns.rcode.SERVFAIL)
                return
            self.cache.put(key, upstream_reply)
        response.set_rcode(upstream_reply.rcode())
        response.answer = upstream_reply.answer
        response.authority = upstream_reply.authority
        response.additional = upstream_reply.additional

    async def _ask_upstreams(
        self, name: dns.name.Name, rdtype: int, rdclass: int
    ) -> dns.message.Message | None:
        upstreams = self.settings.upstreams
        if not upstreams:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.upstream_timeout
        per_try = max(self.settings.upstream_timeout / len(upstreams), 0.25)
        for upstream in upstreams:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            query = dns.message.make_query(
                name,
                dns.rdatatype.RdataType.make(rdtype),
                dns.rdataclass.RdataClass.make(rdclass),
                use_edns=0,
                payload=OUR_UDP_PAYLOAD,
            )
            try:
                async with asyncio.timeout(min(per_try, remaining)):
                    reply, _tcp = await dns.asyncquery.udp_with_fallback(
                        query, str(upstream.address), port=upstream.port, ignore_unexpected=True
                    )
            except (TimeoutError, OSError, EOFError, dns.exception.DNSException) as exc:
                log.debug("dns: upstream %s failed for %s: %r", upstream, name, exc)
                continue
            if reply.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                log.debug("dns: upstream %s answered %s for %s", upstream, reply.rcode(), name)
                continue
            return reply
        log.info("dns: no upstream answered %s %s", name, dns.rdatatype.RdataType.make(rdtype).name)
        return None


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR echoing the id of an unparsable query; None if not even a header."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    flags = 0x8000 | (wire[2] & 0x79) << 8 | dns.rcode.FORMERR  # QR, opcode and RD kept
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass DatagramTransport (3.11)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.server.spawn(self._handle(data, addr))

    async def _handle(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        wire = await self.server.resolver.reply(data, str(addr[0]), max_size=OUR_UDP_PAYLOAD)
        if wire is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error %r", exc)


class DNSServer:
    """Serves a :class:`Resolver` on pre-bound sockets until :meth:`close`."""

    def __init__(self, resolver: Resolver, udp: socket.socket, tcp: socket.socket) -> None:
        self.resolver = resolver
        self._udp_sock = udp
        self._tcp_sock = tcp
        self._tasks: set[asyncio.Task[Any]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._udp_sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), sock=self._udp_sock
        )
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=self._tcp_sock)
        log.info("dns: serving %s on %s:%d", self.resolver.origin, *self.address)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def __aenter__(self) -> DNSServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= MAX_INFLIGHT:
            log.warning("dns: %d queries in flight, dropping one", len(self._tasks))
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_SECONDS):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                wire = await self.resolver.reply(data, source, max_size=None)
                if wire is None:
                    break
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
