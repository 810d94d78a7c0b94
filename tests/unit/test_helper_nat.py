"""The nft ruleset builder and the parser that reads our state back (pure)."""

from __future__ import annotations

import ipaddress

from banger.helper.nat import NatEntry, entries_from_json, ruleset

A = NatEntry("bgbr0", ipaddress.IPv4Network("172.30.0.0/24"))
B = NatEntry("bgbr1", ipaddress.IPv4Network("10.9.0.0/16"))


def test_ruleset_replaces_the_table_in_one_script() -> None:
    assert ruleset([A]) == (
        "add table ip banger\n"
        "delete table ip banger\n"
        "add table ip banger\n"
        "add chain ip banger postrouting "
        "{ type nat hook postrouting priority srcnat; policy accept; }\n"
        "add chain ip banger forward { type filter hook forward priority filter; policy accept; }\n"
        'add rule ip banger postrouting ip saddr 172.30.0.0/24 oifname != "bgbr0" masquerade '
        'comment "banger-nat bgbr0 172.30.0.0/24"\n'
        'add rule ip banger forward iifname "bgbr0" accept '
        'comment "banger-nat bgbr0 172.30.0.0/24"\n'
        'add rule ip banger forward oifname "bgbr0" ct state established,related accept '
        'comment "banger-nat bgbr0 172.30.0.0/24"\n'
    )


def test_no_entries_deletes_the_table() -> None:
    assert ruleset([]) == "add table ip banger\ndelete table ip banger\n"


def test_entries_are_deduplicated_and_ordered() -> None:
    assert ruleset([B, A, B]) == ruleset([A, B])


def rule(comment: str, table: str = "banger") -> dict[str, object]:
    return {"rule": {"family": "ip", "table": table, "chain": "forward", "comment": comment}}


def test_entries_are_read_back_from_rule_comments() -> None:
    listing = {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "ip", "name": "banger"}},
            rule(A.comment),
            rule(A.comment),
            rule(B.comment),
            rule("banger-nat bgbr9 10.0.0.0/16", table="other"),
            rule("someone else's rule"),
        ]
    }
    assert entries_from_json(listing) == [A, B]


def test_malformed_comments_are_ignored() -> None:
    listing = {
        "nftables": [
            rule("banger-nat br0;x 10.0.0.0/16"),
            rule("banger-nat bgbr0 8.8.8.0/24"),
            rule("banger-nat bgbr0 172.30.0.1/24"),
        ]
    }
    assert entries_from_json(listing) == []
