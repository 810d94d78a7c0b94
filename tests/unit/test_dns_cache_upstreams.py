"""Upstream selection from resolv.conf, and the reply cache's TTL rules (fake clock)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from banger.net.dns import ReplyCache, cache_ttl
from banger.net.upstreams import Upstream, choose_upstreams, parse_resolv_conf

RESOLVED_STUB = """\
# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
nameserver 127.0.0.53
options edns0 trust-ad
search lan
"""


def test_parse_resolv_conf_keeps_order_and_skips_junk() -> None:
    text = (
        "nameserver 10.0.0.1 # office\n"
        "  nameserver\t2001:db8::1\n"
        "nameserver not-an-ip\n"
        "nameserver fe80::1%eth0\n"
        "#nameserver 10.9.9.9\n"
        ";nameserver 10.9.9.8\n"
        "nameserver 10.0.0.1\n"
        "nameservers 10.7.7.7\n"
        "nameserver\n"
    )
    assert parse_resolv_conf(text) == (
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("2001:db8::1"),
    )


def test_host_stub_is_kept_unless_it_is_us(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(RESOLVED_STUB)
    stub = ipaddress.ip_address("127.0.0.53")
    assert choose_upstreams((), resolv_conf=conf) == (Upstream(stub),)
    assert choose_upstreams((), listen=[stub], resolv_conf=conf) == ()


def test_configured_upstreams_win(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(RESOLVED_STUB)
    mine = ipaddress.ip_address("192.168.7.1")
    gateway = ipaddress.ip_address("172.30.0.1")
    assert choose_upstreams([mine, gateway], listen=[gateway], resolv_conf=conf) == (
        Upstream(mine),
    )


def test_missing_resolv_conf_means_no_upstreams(tmp_path: Path) -> None:
    assert choose_upstreams((), resolv_conf=tmp_path / "absent") == ()


def test_upstream_text() -> None:
    assert str(Upstream(ipaddress.ip_address("10.0.0.1"))) == "10.0.0.1:53"
    assert str(Upstream(ipaddress.ip_address("::1"), 5353)) == "[::1]:5353"


def _reply(
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR, *, ttls: tuple[int, ...] = (300,)
) -> dns.message.Message:
    query = dns.message.make_query("example.test", "A")
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for i, ttl in enumerate(ttls):
        reply.answer.append(
            dns.rrset.from_text(f"n{i}.example.test.", ttl, "IN", "A", f"192.0.2.{i + 1}")
        )
    return reply


def _negative(soa_ttl: int, minimum: int) -> dns.message.Message:
    reply = _reply(dns.rcode.NXDOMAIN, ttls=())
    reply.authority.append(
        dns.rrset.from_text("test.", soa_ttl, "IN", "SOA", f"ns.test. h.test. 1 1 1 1 {minimum}")
    )
    return reply


def test_cache_ttl_rules() -> None:
    assert cache_ttl(_reply(ttls=(300, 60))) == 60
    assert cache_ttl(_reply(ttls=(999_999,))) == 3600
    assert cache_ttl(_negative(600, 30)) == 30
    assert cache_ttl(_negative(20, 30)) == 20
    assert cache_ttl(_reply(dns.rcode.NXDOMAIN, ttls=())) == 0  # no SOA: do not cache
    assert cache_ttl(_reply(dns.rcode.SERVFAIL, ttls=())) == 0
    truncated = _reply()
    truncated.flags |= dns.flags.TC
    assert cache_ttl(truncated) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KEY = (dns.name.from_text("example.test"), dns.rdatatype.A, 1)


def test_cache_ages_ttls_and_expires() -> None:
    clock = Clock()
    cache = ReplyCache(size=10, clock=clock)
    cache.put(KEY, _reply(ttls=(60,)))
    clock.now += 25
    hit = cache.get(KEY)
    assert hit is not None
    assert hit.answer[0].ttl == 35
    clock.now += 35
    assert cache.get(KEY) is None
    assert len(cache) == 0


def test_cache_is_bounded_lru() -> None:
    cache = ReplyCache(size=2, clock=Clock())
    keys = [(dns.name.from_text(f"n{i}.test"), dns.rdatatype.A, 1) for i in range(3)]
    cache.put(keys[0], _reply())
    cache.put(keys[1], _reply())
    assert cache.get(keys[0]) is not None  # now most recently used
    cache.put(keys[2], _reply())
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None
    assert cache.get(keys[2]) is not None


def test_uncacheable_replies_are_not_stored() -> None:
    cache = ReplyCache(size=10, clock=Clock())
    cache.put(KEY, _reply(dns.rcode.SERVFAIL, ttls=()))
    cache.put(KEY, _reply(ttls=(0,)))
    assert len(cache) == 0
