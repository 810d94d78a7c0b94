"""The VM resolver served on loopback sockets the test binds, queried with dnspython.

Forwarding goes to the test's own tiny upstream on another loopback address;
nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from banger.net.dns import DNSServer, Resolver, ResolverSettings
from banger.net.upstreams import Upstream

VMS = {
    "alpha": ipaddress.IPv4Address("172.30.0.2"),
    "beta": ipaddress.IPv4Address("172.30.0.3"),
}


def bind_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets bound on the same free port (what the helper hands over)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise RuntimeError("no free port pair")


@contextmanager
def free_udp_port(host: str) -> Iterator[int]:
    """A port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    yield port


@dataclass
class FakeUpstream(asyncio.DatagramProtocol):
    """A minimal authoritative server: example.test A 192.0.2.1, else NXDOMAIN."""

    ttl: int = 300
    queries: list[str] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass DatagramTransport (3.11)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        self.queries.append(f"{question.name} {dns.rdatatype.to_text(question.rdtype)}")
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        if str(question.name).lower() == "example.test." and question.rdtype == dns.rdatatype.A:
            reply.answer.append(
                dns.rrset.from_text(question.name, self.ttl, "IN", "A", "192.0.2.1")
            )
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(
                dns.rrset.from_text("test.", 60, "IN", "SOA", "ns.test. h.test. 1 1 1 1 30")
            )
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


@asynccontextmanager
async def fake_upstream(host: str = "127.0.0.3") -> AsyncIterator[tuple[FakeUpstream, Upstream]]:
    proto = FakeUpstream()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: proto, local_addr=(host, 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        yield proto, Upstream(ipaddress.ip_address(host), port)
    finally:
        transport.close()


@asynccontextmanager
async def serving(
    upstreams: tuple[Upstream, ...] = (),
    *,
    allowed: tuple[ipaddress.IPv4Network, ...] = (ipaddress.IPv4Network("127.0.0.0/8"),),
    timeout: float = 2.0,
    lookups: list[str] | None = None,
) -> AsyncIterator[tuple[str, int]]:
    def lookup(name: str) -> ipaddress.IPv4Address | None:
        if lookups is not None:
            lookups.append(name)
        return VMS.get(name)

    settings = ResolverSettings(
        domain="banger", upstreams=upstreams, allowed=allowed, upstream_timeout=timeout
    )
    udp, tcp = bind_pair()
    async with DNSServer(Resolver(settings, lookup), udp, tcp) as server:
        yield server.address


#: How long a test's query waits for the server: a hang bound, far above any
#: upstream timeout a test configures, so that a reply (even SERVFAIL) proves the
#: server gave up on its own, whatever the machine's load.
ASK_TIMEOUT = 60.0


async def ask(
    where: tuple[str, int], name: str, rdtype: str = "A", *, tcp: bool = False, source: str = ""
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, where[0], timeout=ASK_TIMEOUT, port=where[1])
    return await dns.asyncquery.udp(
        query, where[0], timeout=ASK_TIMEOUT, port=where[1], source=source or None
    )


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


async def test_known_vm_gets_its_address() -> None:
    async with serving() as where:
        reply = await ask(where, "alpha.banger")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert addresses(reply) == ["172.30.0.2"]
    assert reply.answer[0].ttl == 5


async def test_names_are_case_insensitive() -> None:
    lookups: list[str] = []
    async with serving(lookups=lookups) as where:
        reply = await ask(where, "BeTa.BANGER.")
    assert addresses(reply) == ["172.30.0.3"]
    assert lookups == ["beta"]


async def test_unknown_name_in_domain_is_nxdomain_with_soa() -> None:
    async with serving() as where:
        reply = await ask(where, "nosuchvm.banger")
        deeper = await ask(where, "x.alpha.banger")
    for r in (reply, deeper):
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert r.authority[0].rdtype == dns.rdatatype.SOA


async def test_other_types_for_a_known_vm_are_empty_noerror() -> None:
    async with serving() as where:
        reply = await ask(where, "alpha.banger", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


async def test_domain_apex_answers_soa() -> None:
    async with serving() as where:
        reply = await ask(where, "banger", "SOA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].rdtype == dns.rdatatype.SOA


async def test_tcp_works() -> None:
    async with serving() as where:
        reply = await ask(where, "alpha.banger", tcp=True)
        again = await ask(where, "nosuch.banger", tcp=True)
    assert addresses(reply) == ["172.30.0.2"]
    assert again.rcode() == dns.rcode.NXDOMAIN


async def test_forwards_and_caches() -> None:
    async with fake_upstream() as (upstream, address), serving((address,)) as where:
        first = await ask(where, "example.test")
        second = await ask(where, "EXAMPLE.test")
        missing = await ask(where, "missing.test")
        missing_again = await ask(where, "missing.test")
    assert addresses(first) == addresses(second) == ["192.0.2.1"]
    assert first.flags & dns.flags.RA
    assert second.answer[0].ttl <= 300
    assert missing.rcode() == missing_again.rcode() == dns.rcode.NXDOMAIN
    # one upstream query per distinct question: the repeats came from the cache
    assert upstream.queries == ["example.test. A", "missing.test. A"]


async def test_dead_upstream_is_skipped_for_the_next() -> None:
    with free_udp_port("127.0.0.4") as dead_port:
        dead = Upstream(ipaddress.IPv4Address("127.0.0.4"), dead_port)
        async with fake_upstream() as (upstream, good), serving((dead, good)) as where:
            reply = await ask(where, "example.test")
    assert addresses(reply) == ["192.0.2.1"]
    assert len(upstream.queries) == 1


async def test_unreachable_upstream_is_servfail() -> None:
    with free_udp_port("127.0.0.4") as dead_port:
        dead = Upstream(ipaddress.IPv4Address("127.0.0.4"), dead_port)
        # A reply at all (the client waits ASK_TIMEOUT) proves the server gave up.
        async with serving((dead,), timeout=1.0) as where:
            reply = await ask(where, "example.test")
    assert reply.rcode() == dns.rcode.SERVFAIL


async def test_silent_upstream_is_servfail_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.5", 0))
        silent = Upstream(ipaddress.IPv4Address("127.0.0.5"), black_hole.getsockname()[1])
        async with serving((silent,), timeout=0.8) as where:
            started = time.monotonic()
            reply = await ask(where, "example.test")
            elapsed = time.monotonic() - started
    # A reply at all (the client waits ASK_TIMEOUT) proves the server gave up by
    # itself. The wait is the behaviour, so a lower bound only: it did wait.
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert elapsed > 0.7


async def test_no_upstreams_is_servfail_but_vms_still_resolve() -> None:
    async with serving(()) as where:
        outside = await ask(where, "example.test")
        inside = await ask(where, "alpha.banger")
    assert outside.rcode() == dns.rcode.SERVFAIL
    assert addresses(inside) == ["172.30.0.2"]


async def test_disallowed_source_is_refused() -> None:
    lookups: list[str] = []
    only_one = (ipaddress.IPv4Network("127.0.0.1/32"),)
    async with serving(allowed=only_one, lookups=lookups) as where:
        refused = await ask(where, "alpha.banger", source="127.0.0.2")
        ok = await ask(where, "alpha.banger", source="127.0.0.1")
    assert refused.rcode() == dns.rcode.REFUSED
    assert refused.answer == []
    assert addresses(ok) == ["172.30.0.2"]
    assert lookups == ["alpha"]


async def test_garbage_gets_formerr_or_silence() -> None:
    async with serving() as where:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect(where)
            s.send(b"\x12\x34\x01\x00\x00\x01garbage")
            reply = await asyncio.wait_for(loop.sock_recv(s, 512), 5)
            s.send(b"\x12")  # not even a header: no answer, and the server lives on
            s.send(dns.message.make_query("alpha.banger", "A").to_wire())
            after = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 512), 5))
    assert reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    assert addresses(after) == ["172.30.0.2"]


@pytest.mark.parametrize("edns", [False, True])
async def test_large_upstream_reply_is_truncated_over_udp_then_fine_over_tcp(edns: bool) -> None:
    many = {f"vm{i}": ipaddress.IPv4Address(f"172.30.1.{i}") for i in range(1, 120)}

    class Big(FakeUpstream):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            rrset = dns.rrset.from_text_list(
                query.question[0].name, 60, "IN", "A", [str(a) for a in many.values()]
            )
            reply.answer.append(rrset)
            assert self.transport is not None
            # over the payload our resolver advertised: a sloppy upstream
            self.transport.sendto(reply.to_wire(max_size=65535), addr)

    proto = Big()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: proto, local_addr=("127.0.0.3", 0)
    )
    try:
        up = Upstream(ipaddress.IPv4Address("127.0.0.3"), transport.get_extra_info("sockname")[1])
        async with serving((up,)) as where:
            query = dns.message.make_query("big.test", "A", use_edns=0 if edns else False)
            udp = await dns.asyncquery.udp(query, where[0], timeout=5, port=where[1])
            tcp = await dns.asyncquery.tcp(query, where[0], timeout=5, port=where[1])
    finally:
        transport.close()
    # 119 A records are ~1.9 kB: more than 512 and more than our 1232-byte UDP payload
    assert udp.flags & dns.flags.TC
    assert len(addresses(tcp)) == 119
