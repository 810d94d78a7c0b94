"""bind_dns and resolver_link through the real banger-helper, inside a network namespace.

The helper binds port 53 on the bridge address in the namespace; this process
serves the resolver on the descriptors it hands back (a socket keeps the
namespace it was made in), and a client inside the namespace queries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.errors import HelperError
from banger.helper.client import HelperClient
from banger.net.dns import DNSServer, Resolver, ResolverSettings
from tests.helper_launch import helper_paths, running_helper
from tests.support import Netns, netns, short_tmpdir

pytestmark = [pytest.mark.root]

BRIDGE, GATEWAY = "bgdns0", "172.30.9.1/24"

QUERY = r"""
import sys, dns.message, dns.query
q = dns.message.make_query(sys.argv[2], "A")
ask = dns.query.tcp if sys.argv[3] == "tcp" else dns.query.udp
r = ask(q, sys.argv[1], timeout=5)
print(dns.rcode.to_text(r.rcode()), *[rr.to_text() for rrset in r.answer for rr in rrset])
"""


@pytest.fixture
def helper() -> Iterator[tuple[Netns, HelperClient]]:
    with netns("bgd") as ns, short_tmpdir("bgd-") as tmp:
        paths = helper_paths(tmp)
        with running_helper(paths, 0, ns=ns):
            yield ns, HelperClient(paths.helper_socket, timeout=30)


async def query_from(ns: Netns, name: str, transport: str = "udp") -> str:
    proc = await asyncio.create_subprocess_exec(
        *ns.argv(sys.executable, "-c", QUERY, "172.30.9.1", name, transport),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_bind_dns_hands_over_port_53_on_the_bridge(
    helper: tuple[Netns, HelperClient],
) -> None:
    ns, client = helper
    client.call("ensure_bridge", name=BRIDGE, cidr=GATEWAY)
    result, fds = client.call_with_fds("bind_dns", cidr=GATEWAY)
    assert len(fds) == 2
    assert result == {
        "address": "172.30.9.1",
        "port": 53,
        "bridge": BRIDGE,
        "fds": ["udp", "tcp"],
    }
    udp, tcp = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
    assert (udp.type, tcp.type) == (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    assert udp.getsockname() == tcp.getsockname() == ("172.30.9.1", 53)
    assert not os.get_inheritable(udp.fileno())

    settings = ResolverSettings(
        domain="banger", upstreams=(), allowed=(ipaddress.IPv4Network("172.30.9.0/24"),)
    )
    vms = {"alpha": ipaddress.IPv4Address("172.30.9.2")}
    async with DNSServer(Resolver(settings, vms.get), udp, tcp):
        assert await query_from(ns, "alpha.banger") == "NOERROR 172.30.9.2"
        assert await query_from(ns, "alpha.banger", "tcp") == "NOERROR 172.30.9.2"
        assert await query_from(ns, "nosuch.banger") == "NXDOMAIN"
    with contextlib.suppress(OSError):
        udp.close()
        tcp.close()


def test_bind_dns_refuses_addresses_off_banger_bridges(
    helper: tuple[Netns, HelperClient],
) -> None:
    ns, client = helper
    ns.run("ip", "link", "add", "otherbr", "type", "bridge")  # not banger-managed
    ns.run("ip", "addr", "add", "172.31.5.1/24", "dev", "otherbr")
    with pytest.raises(HelperError, match=re.escape("172.31.5.1 is not on a banger bridge")):
        client.call("bind_dns", cidr="172.31.5.1/24")
    with pytest.raises(HelperError, match=re.escape("no interface has the address 172.30.9.1")):
        client.call("bind_dns", cidr=GATEWAY)
    client.call("ensure_bridge", name=BRIDGE, cidr=GATEWAY)
    with pytest.raises(HelperError, match=r"is on bgdns0 as 172.30.9.1/24, not 172.30.9.1/25"):
        client.call("bind_dns", cidr="172.30.9.1/25")
    with pytest.raises(HelperError, match="must be an IPv4 address with a prefix"):
        client.call("bind_dns", cidr="172.30.9.1")


def test_bind_dns_twice_is_a_conflict(helper: tuple[Netns, HelperClient]) -> None:
    _ns, client = helper
    client.call("ensure_bridge", name=BRIDGE, cidr=GATEWAY)
    _result, fds = client.call_with_fds("bind_dns", cidr=GATEWAY)
    try:
        with pytest.raises(HelperError, match=r"cannot bind 172.30.9.1:53: Address already"):
            client.call("bind_dns", cidr=GATEWAY)
    finally:
        for fd in fds:
            os.close(fd)
    _result, fds = client.call_with_fds("bind_dns", cidr=GATEWAY)  # free again once closed
    for fd in fds:
        os.close(fd)


@pytest.mark.skipif(Path("/run/systemd/resolve").is_dir(), reason="host runs systemd-resolved")
def test_resolver_link_without_resolved_says_why(helper: tuple[Netns, HelperClient]) -> None:
    _ns, client = helper
    client.call("ensure_bridge", name=BRIDGE, cidr=GATEWAY)
    result = client.call("resolver_link", bridge=BRIDGE, cidr=GATEWAY, domain="banger")
    assert result == {
        "configured": False,
        "reason": "systemd-resolved is not running (no /run/systemd/resolve)",
    }


#: A resolvectl that records each call's argv (one JSON list a line) and changes
#: nothing; it fails ``default-route`` (as resolved < 240 does) when told to.
RESOLVECTL_STANDIN = """#!{python}
import json, sys
from pathlib import Path
calls = Path({calls!r})
with calls.open("a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["default-route"] and calls.with_name("no-default-route").exists():
    sys.exit("Unknown command verb default-route.")
"""

#: The helper in its own mount namespace with an empty tmpfs on /run/systemd and
#: /run/systemd/resolve in it: systemd-resolved "runs" for this helper only,
#: whatever the host has (other tests see the host's /run unchanged).
RESOLVED_RUNS = (
    "unshare", "--mount", "--propagation", "private", "sh", "-c",
    'mount -t tmpfs banger-test /run/systemd && mkdir /run/systemd/resolve && exec "$@"', "sh",
)  # fmt: skip


def recorded(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_resolver_link_points_resolved_at_the_bridge_for_the_domain_only() -> None:
    with netns("bgd") as ns, short_tmpdir("bgd-") as tmp:
        calls = tmp / "resolvectl.calls"
        bindir = tmp / "bin"
        bindir.mkdir()
        standin = bindir / "resolvectl"
        standin.write_text(RESOLVECTL_STANDIN.format(python=sys.executable, calls=str(calls)))
        standin.chmod(0o755)
        paths = helper_paths(tmp)
        path = f"{bindir}:{os.environ['PATH']}"
        with running_helper(paths, 0, ns=ns, wrap=RESOLVED_RUNS, env={"PATH": path}):
            client = HelperClient(paths.helper_socket, timeout=30)
            client.call("ensure_bridge", name=BRIDGE, cidr=GATEWAY)
            # Refusals run nothing: no half-configured link.
            with pytest.raises(HelperError, match="bridge bgnone0 does not exist"):
                client.call("resolver_link", bridge="bgnone0", cidr=GATEWAY, domain="banger")
            with pytest.raises(HelperError, match=r"is on bgdns0 as 172.30.9.1/24, not .*/25"):
                client.call("resolver_link", bridge=BRIDGE, cidr="172.30.9.1/25", domain="banger")
            assert recorded(calls) == []

            result = client.call("resolver_link", bridge=BRIDGE, cidr=GATEWAY, domain="vms.test")
            assert result == {
                "configured": True, "bridge": BRIDGE, "dns": "172.30.9.1", "domain": "~vms.test",
            }  # fmt: skip
            # The bridge's own DNS server, a routing-only domain (the ~), never the default route.
            assert recorded(calls) == [
                ["dns", BRIDGE, "172.30.9.1"],
                ["domain", BRIDGE, "~vms.test"],
                ["default-route", BRIDGE, "false"],
            ]

            # An older resolvectl without default-route: the link still works (the
            # routing-only domain already keeps it off the default route), and the log says so.
            calls.unlink()
            (tmp / "no-default-route").touch()
            result = client.call("resolver_link", bridge=BRIDGE, cidr=GATEWAY, domain="banger")
            assert result["configured"] is True
            assert [call[0] for call in recorded(calls)] == ["dns", "domain", "default-route"]
            assert "resolver_link: default-route not set on bgdns0" in paths.helper_log.read_text()
