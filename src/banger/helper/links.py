"""Bridges and taps, through netlink (pyroute2) and the tun ioctls.

Ownership markers keep the helper to its own interfaces: a bridge it creates
carries the interface alias :data:`BRIDGE_ALIAS` and it refuses to change or
delete a bridge without it; taps are named ``bt-…`` (enforced by validation)
and must be tun/tap devices.

Taps are opened on ``/dev/net/tun`` with ``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``:
no packet-info prefix (QEMU and Firecracker expect raw frames) and a virtio-net
header on every frame, which lets QEMU run ``vnet_hdr=on`` (checksum/TSO
offload) — QEMU probes the flag on the descriptor it is given and sets the
header size itself. They are made persistent (``TUNSETPERSIST``) so a VMM
restart can reopen the same tap, and owned by the owner uid (``TUNSETOWNER``);
``delete_tap``/``teardown_network`` remove them.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from banger.errors import Conflict, HelperError, NotFound
from banger.helper.validate import TAP_PREFIX

log = logging.getLogger(__name__)

BRIDGE_ALIAS = "banger-managed"

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
TAP_FLAG_NAMES = ("IFF_TAP", "IFF_NO_PI", "IFF_VNET_HDR")


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None


def _link(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=msg.get(("linkinfo", "kind")),
        alias=msg.get("ifalias"),
        master=msg.get("master"),
    )


def find_link(ipr: IPRoute, name: str) -> Link | None:
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    return _link(ipr.get_links(indexes[0])[0])


def all_links(ipr: IPRoute) -> list[Link]:
    return [_link(m) for m in ipr.get_links()]


def is_banger_bridge(link: Link) -> bool:
    """The one ownership rule for bridges: every op that touches one applies it."""
    return link.kind == "bridge" and link.alias == BRIDGE_ALIAS


def owned_bridge(ipr: IPRoute, name: str, *, field: str = "") -> Link | None:
    """The banger bridge ``name``, None if no interface has that name.

    Any other interface (``lo``, an uplink, someone's own bridge) is a
    :class:`Conflict`; ``field`` prefixes the message with the request field.
    """
    where = f"{field}: " if field else ""
    link = find_link(ipr, name)
    if link is None:
        return None
    if not is_banger_bridge(link):
        raise Conflict(
            f"{where}interface {name} exists and is not a banger bridge",
            hint="choose another bridge name in banger's config, or remove that interface",
        )
    return link


def require_banger_bridge(name: str, *, field: str) -> Link:
    """Like :func:`owned_bridge`, and a missing interface is refused too (naming ``field``).

    For ops that change host-wide state on a bridge's behalf (``ensure_nat``):
    nothing may be set up that ``teardown_network`` would then refuse to remove.
    """
    with IPRoute() as ipr:
        link = owned_bridge(ipr, name, field=field)
    if link is None:
        raise NotFound(
            f"{field}: interface {name} does not exist",
            hint="ensure_bridge creates the bridge; banger asks for it before ensure_nat",
        )
    return link


def ensure_bridge(name: str, gateway: ipaddress.IPv4Interface) -> dict[str, Any]:
    """Create the bridge if absent, give it exactly ``gateway``, bring it up."""
    with IPRoute() as ipr:
        link = owned_bridge(ipr, name)
        _refuse_overlap(ipr, gateway.network, except_index=link.index if link else None)
        created = link is None
        if link is None:
            ipr.link("add", ifname=name, kind="bridge")
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, ifalias=BRIDGE_ALIAS)
            log.info("ensure_bridge: created bridge %s (index %d)", name, index)
        else:
            index = link.index
        present = False
        for addr in ipr.get_addr(family=2, index=index):
            current = ipaddress.IPv4Interface(f"{addr.get('address')}/{addr['prefixlen']}")
            if current == gateway:
                present = True
                continue
            ipr.addr(
                "del", index=index, address=str(current.ip), prefixlen=current.network.prefixlen
            )
            log.info("ensure_bridge: removed stale address %s from %s", current, name)
        if not present:
            ipr.addr(
                "add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen
            )
            log.info("ensure_bridge: set %s on %s", gateway, name)
        ipr.link("set", index=index, state="up")
    log.info("ensure_bridge: %s %s up (created=%s)", name, gateway, created)
    return {"name": name, "cidr": str(gateway), "created": created}


def _refuse_overlap(ipr: IPRoute, network: ipaddress.IPv4Network, except_index: int | None) -> None:
    """A bridge subnet overlapping another interface's would break host routing."""
    for addr in ipr.get_addr(family=2):
        if addr["index"] == except_index:
            continue
        other = ipaddress.IPv4Interface(f"{addr.get('address')}/{addr['prefixlen']}").network
        if other.overlaps(network):
            label = addr.get("label") or f"index {addr['index']}"
            raise Conflict(
                f"subnet {network} overlaps {other} on {label}",
                hint="pick another bridge subnet in banger's config",
            )


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode("ascii"), flags)


def open_tap(name: str, bridge: str, owner_uid: int) -> tuple[dict[str, Any], int]:
    """Create (or reopen) a persistent tap on ``bridge``; return an open descriptor."""
    with IPRoute() as ipr:
        br = owned_bridge(ipr, bridge)
        if br is None:
            raise NotFound(
                f"bridge {bridge} does not exist", hint="call ensure_bridge before open_tap"
            )
        fd, created = _open_tap(ipr, name, owner_uid, master=br.index)
    log.info("open_tap: %s on %s, owner uid %d (created=%s)", name, bridge, owner_uid, created)
    return _tap_result(name, created, bridge=bridge), fd


def open_tap_detached(name: str, owner_uid: int) -> tuple[dict[str, Any], int]:
    """Like :func:`open_tap`, but the tap is on no bridge and its link is down.

    For a guest restored from a snapshot that still has the source's MAC and
    address until it is re-identified: nothing it sends reaches a bridge (the
    tap is no bridge's port) nor the host's own stack (a down interface takes
    no frames). :func:`attach_tap` joins it to the bridge afterwards. An
    existing tap of that name is taken off its bridge and set down.
    """
    with IPRoute() as ipr:
        fd, created = _open_tap(ipr, name, owner_uid, master=None)
    log.info("open_tap_detached: %s, owner uid %d (created=%s)", name, owner_uid, created)
    return _tap_result(name, created, bridge=None), fd


def _tap_result(name: str, created: bool, *, bridge: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "bridge": bridge,
        "created": created,
        "flags": list(TAP_FLAG_NAMES),
        "vnet_hdr": True,
    }


def _open_tap(ipr: IPRoute, name: str, owner_uid: int, *, master: int | None) -> tuple[int, bool]:
    """The tap's descriptor (persistent, owned by ``owner_uid``) and whether it was made.

    ``master``: the bridge's index, the tap enslaved and up; None: no master, down.
    """
    existing = find_link(ipr, name)
    if existing is not None and existing.kind != "tun":
        raise Conflict(f"interface {name} exists and is not a tap")
    created = existing is None
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, TAP_FLAGS))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise Conflict(
                    f"tap {name} is already open in another process",
                    hint="is the VM already running? stop it first",
                ) from None
            raise HelperError(f"TUNSETIFF {name}: {exc.strerror}") from None
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
        fcntl.ioctl(fd, TUNSETOWNER, owner_uid)
        index = ipr.link_lookup(ifname=name)[0]
        if master is None:
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, master=0)  # 0: off any bridge
        else:
            ipr.link("set", index=index, master=master, state="up")
    except BaseException:
        os.close(fd)
        if created:
            _delete_quietly(ipr, name)
        raise
    return fd, created


def _tun_owner(ipr: IPRoute, index: int) -> int | None:
    """The tap's ``TUNSETOWNER`` uid (IFLA_TUN_OWNER), None when unset or not reported."""
    msg = ipr.get_links(index)[0]
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    owner = data.get_attr("IFLA_TUN_OWNER") if data is not None else None
    return int(owner) if owner is not None else None


def attach_tap(name: str, bridge: str, owner_uid: int) -> dict[str, Any]:
    """Enslave the detached tap ``name`` to the banger bridge ``bridge`` and bring it up.

    Only a tun device of banger's name space (validation) that the owner owns
    (``TUNSETOWNER``, what :func:`open_tap_detached` set): a tap of someone
    else's, or one already on another interface, is refused. Idempotent on a
    tap already on ``bridge``.
    """
    with IPRoute() as ipr:
        br = owned_bridge(ipr, bridge, field="attach_tap.args.bridge")
        if br is None:
            raise NotFound(
                f"attach_tap.args.bridge: bridge {bridge} does not exist",
                hint="call ensure_bridge before attach_tap",
            )
        link = find_link(ipr, name)
        if link is None:
            raise NotFound(f"attach_tap.args.name: tap {name} does not exist")
        if link.kind != "tun":
            raise Conflict(f"attach_tap.args.name: interface {name} exists and is not a tap")
        owner = _tun_owner(ipr, link.index)
        if owner != owner_uid:
            raise Conflict(
                f"attach_tap.args.name: tap {name} is owned by uid {owner}, not the owner "
                f"(uid {owner_uid})"
            )
        if link.master not in (None, 0, br.index):
            raise Conflict(
                f"attach_tap.args.name: tap {name} is already enslaved to interface index "
                f"{link.master}, not {bridge}"
            )
        ipr.link("set", index=link.index, master=br.index, state="up")
    log.info("attach_tap: %s on %s, up", name, bridge)
    return {"name": name, "bridge": bridge, "attached": True}


def _delete_quietly(ipr: IPRoute, name: str) -> None:
    indexes = ipr.link_lookup(ifname=name)
    if indexes:
        ipr.link("del", index=indexes[0])


def delete_tap(name: str) -> dict[str, Any]:
    with IPRoute() as ipr:
        link = find_link(ipr, name)
        if link is None:
            log.info("delete_tap: %s already absent", name)
            return {"name": name, "deleted": False}
        if link.kind != "tun":
            raise Conflict(f"interface {name} exists and is not a tap")
        ipr.link("del", index=link.index)
    log.info("delete_tap: deleted %s", name)
    return {"name": name, "deleted": True}


def teardown_bridge(bridge: str) -> tuple[list[str], bool]:
    """Delete banger's taps on ``bridge``, then the bridge. Returns (taps, bridge_deleted)."""
    with IPRoute() as ipr:
        br = owned_bridge(ipr, bridge)
        if br is None:
            log.info("teardown_network: bridge %s already absent", bridge)
            return [], False
        taps = [
            link
            for link in all_links(ipr)
            if link.master == br.index and link.kind == "tun" and link.name.startswith(TAP_PREFIX)
        ]
        for tap in taps:
            ipr.link("del", index=tap.index)
            log.info("teardown_network: deleted tap %s", tap.name)
        ipr.link("del", index=br.index)
        log.info("teardown_network: deleted bridge %s", bridge)
    return [t.name for t in taps], True
