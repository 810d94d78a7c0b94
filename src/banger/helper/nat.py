"""NAT for bridge subnets: one nft table, ``ip banger``, replaced atomically.

The ruleset itself is the state: every rule carries a comment
``banger-nat <bridge> <subnet>``, so :func:`ensure_nat` reads the live table,
adds its entry and writes the whole table back in ONE ``nft -f -``
transaction (``add table; delete table; add table …``), which either applies
completely or not at all. Nothing can drift between a state file and the
kernel (the table vanishes on reboot, and so does the "state").

Per entry::

    postrouting (nat, srcnat):  ip saddr <subnet> oifname != "<bridge>" masquerade
    forward (filter):           iifname "<bridge>" accept
                                oifname "<bridge>" ct state established,related accept

Both chains have policy accept: banger adds permission for its bridges and
never drops anybody else's traffic. ``ensure_nat`` also turns on
``net.ipv4.ip_forward`` (needed for any NAT to work); teardown leaves it on
because other software may rely on it.

``ensure_nat`` serves only an existing banger bridge (the ownership rule
``teardown_network`` applies, :func:`banger.helper.links.owned_bridge`),
checked before anything changes: otherwise ``lo``, an uplink or a name that
does not exist yet would get rules and forwarding that teardown then refuses
to remove.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger import proc
from banger.helper import links
from banger.helper.validate import Context, check_bridge, check_subnet

log = logging.getLogger(__name__)

TABLE = "banger"
_COMMENT = re.compile(r"banger-nat (\S+) (\S+)")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True, order=True)
class NatEntry:
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def comment(self) -> str:
        return f"banger-nat {self.bridge} {self.subnet}"


def ruleset(entries: list[NatEntry]) -> str:
    """The nft script that makes table ``ip banger`` hold exactly ``entries``.

    With no entries the script removes the table (add-then-delete never fails).
    """
    lines = [f"add table ip {TABLE}", f"delete table ip {TABLE}"]
    if entries:
        lines += [
            f"add table ip {TABLE}",
            f"add chain ip {TABLE} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }",
            f"add chain ip {TABLE} forward "
            "{ type filter hook forward priority filter; policy accept; }",
        ]
    for e in sorted(set(entries)):
        tag = f'comment "{e.comment}"'
        lines += [
            f'add rule ip {TABLE} postrouting ip saddr {e.subnet} oifname != "{e.bridge}" '
            f"masquerade {tag}",
            f'add rule ip {TABLE} forward iifname "{e.bridge}" accept {tag}',
            f'add rule ip {TABLE} forward oifname "{e.bridge}" ct state established,related '
            f"accept {tag}",
        ]
    return "\n".join(lines) + "\n"


def entries_from_json(listing: dict[str, Any]) -> list[NatEntry]:
    """Our entries, from ``nft -j list table ip banger`` output.

    Comments are re-validated like any request: whoever can edit the table is
    root already, but the values flow back into a ruleset we write.
    """
    found: set[NatEntry] = set()
    ctx = Context()
    for item in listing.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or rule.get("table") != TABLE:
            continue
        match = _COMMENT.fullmatch(str(rule.get("comment", "")))
        if not match:
            continue
        try:
            found.add(NatEntry(check_bridge(ctx, match[1]), check_subnet(ctx, match[2])))
        except ValueError:
            log.warning("ignoring malformed banger rule comment: %r", rule.get("comment"))
    return sorted(found)


def _table_listing() -> dict[str, Any] | None:
    """``nft -j list table ip banger``, or None when the table does not exist."""
    tables = json.loads(proc.run(["nft", "-j", "list", "tables", "ip"]).out or "{}")
    names = {
        t["table"].get("name")
        for t in tables.get("nftables", [])
        if isinstance(t, dict) and "table" in t
    }
    if TABLE not in names:
        return None
    listing: dict[str, Any] = json.loads(proc.run(["nft", "-j", "list", "table", "ip", TABLE]).out)
    return listing


def current_entries() -> list[NatEntry]:
    listing = _table_listing()
    return [] if listing is None else entries_from_json(listing)


def apply(entries: list[NatEntry]) -> None:
    proc.run(["nft", "-f", "-"], input=ruleset(entries).encode())


def _enable_forwarding() -> None:
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1\n")
        log.info("ensure_nat: enabled net.ipv4.ip_forward")


def ensure_nat(subnet: ipaddress.IPv4Network, bridge: str) -> dict[str, Any]:
    # First, before any nft change or sysctl: refuses lo, uplinks, foreign and missing ones.
    links.require_banger_bridge(bridge, field="ensure_nat.args.bridge")
    entries = current_entries()
    wanted = NatEntry(bridge, subnet)
    changed = wanted not in entries
    if changed:
        # One bridge NATs one subnet: a changed subnet replaces the old entry.
        entries = [e for e in entries if e.bridge != bridge and e.subnet != subnet] + [wanted]
        apply(entries)
        log.info("ensure_nat: masquerading %s from %s", subnet, bridge)
    else:
        log.info("ensure_nat: %s from %s already in place", subnet, bridge)
    _enable_forwarding()
    return {"cidr": str(subnet), "bridge": bridge, "changed": changed}


def remove_bridge(bridge: str) -> tuple[list[str], bool]:
    """Drop ``bridge``'s entries; the table goes when the last entry does.

    Returns (the subnets removed, whether the table was deleted); a second
    call finds nothing and changes nothing.
    """
    listing = _table_listing()
    if listing is None:
        return [], False
    entries = entries_from_json(listing)
    kept = [e for e in entries if e.bridge != bridge]
    removed = [str(e.subnet) for e in entries if e.bridge == bridge]
    if removed or not kept:
        # With nothing left this deletes the table, even an empty leftover one.
        apply(kept)
    if removed:
        log.info("teardown_network: removed NAT for %s (%s)", bridge, ", ".join(removed))
    if not kept:
        log.info("teardown_network: deleted nft table ip %s (no entries left)", TABLE)
    return removed, not kept
