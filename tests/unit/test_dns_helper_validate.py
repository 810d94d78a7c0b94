"""Validation of the helper's DNS ops: the domain checker and the op arguments."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from banger.helper.validate import (
    BindDnsArgs,
    Context,
    RequestInvalid,
    ResolverLinkArgs,
    check_domain,
    validate_request,
)
from tests.support import Branches

CTX = Context()


@pytest.mark.parametrize("good", ["banger", "vms.example", "a", "x-1.b2", "0.banger", "a" * 63])
def test_plain_domains_accepted(good: str) -> None:
    assert check_domain(CTX, good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Banger",
        "banger.",
        ".banger",
        "ban..ger",
        "-banger",
        "banger-",
        "0",
        "banger.0",
        "ban ger",
        "banger;id",
        "banger\n",
        "~banger",
        "*.banger",
        "bänger",
        "a" * 64,
        ".".join(["a" * 60] * 5),
    ],
)
def test_odd_domains_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="lowercase DNS name"):
        check_domain(CTX, bad)


#: Any text (nearly always refused) or text shaped like a domain (often accepted).
domains = st.text(max_size=300) | st.from_regex(r"[a-z0-9.-]{1,70}", fullmatch=True)


def test_accepted_domains_are_plain() -> None:
    branches = Branches()

    @example("banger")
    @example("vms.example")
    @example("-banger")  # an option to resolvectl: refused
    @given(domains)
    def accepted_domains_are_plain(text: str) -> None:
        try:
            name = check_domain(CTX, text)
        except ValueError:
            branches.took("refused")
            return
        branches.took("accepted")
        # nothing resolvectl could read as an option, a glob or a second argument
        assert re.fullmatch(r"[a-z0-9.-]+", name)
        assert not name.startswith(("-", ".")) and ".." not in name and len(name) <= 253
        assert name.rsplit(".", 1)[-1][0].isalpha()

    accepted_domains_are_plain()
    branches.require("accepted", "refused")


def test_requests_build_typed_args() -> None:
    bind = validate_request(CTX, {"id": 1, "op": "bind_dns", "args": {"cidr": "172.30.0.1/24"}})
    assert bind.args == BindDnsArgs(ipaddress.IPv4Interface("172.30.0.1/24"))
    link = validate_request(
        CTX,
        {
            "id": 2,
            "op": "resolver_link",
            "args": {"bridge": "banger0", "cidr": "172.30.0.1/24", "domain": "banger"},
        },
    )
    assert link.args == ResolverLinkArgs(
        "banger0", ipaddress.IPv4Interface("172.30.0.1/24"), "banger"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"cidr": "172.30.0.1"}, "bind_dns.args.cidr: must be an IPv4 address with a prefix"),
        ({"cidr": "172.30.0.0/24"}, "bind_dns.args.cidr: 172.30.0.0 is the network"),
        ({"cidr": "127.0.0.1/8"}, "bind_dns.args.cidr: prefix must be"),
        ({"cidr": "8.8.8.1/24"}, "bind_dns.args.cidr: must be inside 10.0.0.0/8"),
        ({"cidr": "172.30.0.1/24", "port": 53}, "bind_dns.args.port: unknown field"),
    ],
)
def test_bind_dns_refuses(args: dict[str, object], error: str) -> None:
    with pytest.raises(RequestInvalid, match=re.escape(error)):
        validate_request(CTX, {"id": 1, "op": "bind_dns", "args": args})


def test_resolver_link_reports_every_problem() -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_request(
            CTX,
            {
                "id": 1,
                "op": "resolver_link",
                "args": {"bridge": "bt-x", "cidr": "1.2.3.4/24", "domain": "~."},
            },
        )
    assert [p.split(":")[0] for p in info.value.problems] == [
        "resolver_link.args.bridge",
        "resolver_link.args.cidr",
        "resolver_link.args.domain",
    ]
