"""Strict, hand-written validation of every request the root helper accepts.

Nothing the owner sends is trusted. Each op has a fixed set of fields, all
required; unknown ops, missing fields, extra fields and wrong types (a bool is
not an int) are refused, and every identifier is re-checked here even though
the daemon checked it already:

- interface names match ``[a-z][a-z0-9-]{0,14}`` (whole string, so no trailing
  newline sneaks through); taps are ``bt-…`` and bridges never are, so the
  helper can only ever create or delete taps in its own name space;
- addresses are IPv4 in RFC 1918 space with a /16–/30 prefix, written as
  ``a.b.c.d/nn`` (no netmask form, no leading zeros), with host bits handled
  explicitly: a bridge address must have them, a NAT subnet must not;
- paths are absolute, NUL-free, normalised (no ``.``/``..``/``//``), strictly
  inside one of the ``--allow-root`` directories, and no component below the
  root is a symlink (checked with ``lstat`` on each one).

Every problem in a request is reported at once, each naming its field:
``open_tap.args.name: must match bt-[a-z0-9-]{1,12}``.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from banger.errors import InvalidArgument

IFNAME_PATTERN = "[a-z][a-z0-9-]{0,14}"
#: Taps the helper creates are named with this prefix, and it touches no others.
TAP_PREFIX = "bt-"
TAP_PATTERN = "bt-[a-z0-9-]{1,12}"
MIN_PREFIX, MAX_PREFIX = 16, 30
#: Address space a bridge or NAT subnet may use: RFC 1918 only, so a bridge
#: can never capture the route to a public network.
PRIVATE_NETWORKS = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_CIDR_SHAPE = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}/[1-9][0-9]?")
_ID_MAX = 128
#: Linux's limits (limits.h): a longer path or name cannot name a file; say so up front.
PATH_MAX = 4096
NAME_MAX = 255
_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?")
_DOMAIN_MAX = 253


class RequestInvalid(InvalidArgument):
    """A request failed validation; the message names every bad field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), hint="this is a banger bug or a hostile caller")
        self.problems = problems


@dataclass(frozen=True)
class Context:
    """What validation needs from the helper's own configuration."""

    allow_roots: tuple[Path, ...] = ()

    @classmethod
    def from_dirs(cls, dirs: list[Path]) -> Context:
        """Resolve the ``--allow-root`` directories once, at startup."""
        roots = []
        for d in dirs:
            if not d.is_absolute():
                raise InvalidArgument(f"--allow-root {d}: must be an absolute path")
            resolved = Path(os.path.realpath(d))
            if not resolved.is_dir():
                raise InvalidArgument(f"--allow-root {d}: not a directory")
            roots.append(resolved)
        return cls(tuple(roots))


# -- op arguments ----------------------------------------------------------


@dataclass(frozen=True)
class NoArgs:
    pass


@dataclass(frozen=True)
class EnsureBridgeArgs:
    name: str
    cidr: ipaddress.IPv4Interface


@dataclass(frozen=True)
class OpenTapArgs:
    name: str
    bridge: str


@dataclass(frozen=True)
class OpenTapDetachedArgs:
    name: str


@dataclass(frozen=True)
class AttachTapArgs:
    name: str
    bridge: str


@dataclass(frozen=True)
class DeleteTapArgs:
    name: str


@dataclass(frozen=True)
class EnsureNatArgs:
    cidr: ipaddress.IPv4Network
    bridge: str


@dataclass(frozen=True)
class TeardownNetworkArgs:
    bridge: str


@dataclass(frozen=True)
class BindDnsArgs:
    cidr: ipaddress.IPv4Interface


@dataclass(frozen=True)
class ResolverLinkArgs:
    bridge: str
    cidr: ipaddress.IPv4Interface
    domain: str


@dataclass(frozen=True)
class Request:
    id: int | str
    op: str
    args: Any


# -- field checkers: (context, value) -> checked value; ValueError says why --

Checker = Callable[[Context, object], object]


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_type_name(value)}")
    return value


def check_ifname(_ctx: Context, value: object) -> str:
    name = _string(value)
    if not re.fullmatch(IFNAME_PATTERN, name):
        raise ValueError(f"must match {IFNAME_PATTERN}")
    return name


def check_bridge(ctx: Context, value: object) -> str:
    name = check_ifname(ctx, value)
    if name.startswith(TAP_PREFIX):
        raise ValueError(f"bridge names may not start with {TAP_PREFIX!r} (reserved for taps)")
    return name


def check_tap(_ctx: Context, value: object) -> str:
    name = _string(value)
    if not re.fullmatch(TAP_PATTERN, name):
        raise ValueError(f"must match {TAP_PATTERN}")
    return name


def check_domain(_ctx: Context, value: object) -> str:
    """A lowercase DNS name without a trailing dot; its last label starts with a letter."""
    name = _string(value)
    if len(name) > _DOMAIN_MAX or not _DOMAIN.fullmatch(name):
        raise ValueError(
            "must be a lowercase DNS name like 'banger' or 'vms.example' "
            f"(labels of a-z, 0-9 and '-', at most {_DOMAIN_MAX} characters)"
        )
    return name


def _private(net: ipaddress.IPv4Network) -> None:
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise ValueError(f"prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}, got /{net.prefixlen}")
    if not any(net.subnet_of(p) for p in PRIVATE_NETWORKS):
        raise ValueError("must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")


def _cidr_text(value: object) -> str:
    text = _string(value)
    if not _CIDR_SHAPE.fullmatch(text):
        raise ValueError("must be an IPv4 address with a prefix length, like 172.30.0.1/24")
    return text


def check_gateway(_ctx: Context, value: object) -> ipaddress.IPv4Interface:
    """A bridge address with its prefix: host bits set, not the broadcast."""
    text = _cidr_text(value)
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address: {exc}") from None
    _private(iface.network)
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(
            f"{iface.ip} is the network or broadcast address of {iface.network}; "
            "give the gateway's own address, like 172.30.0.1/24"
        )
    return iface


def check_subnet(_ctx: Context, value: object) -> ipaddress.IPv4Network:
    """A subnet to NAT: host bits must be zero."""
    text = _cidr_text(value)
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network: {exc}") from None
    if str(net) != text:
        raise ValueError(f"host bits set; the subnet is {net}")
    _private(net)
    return net


def checked_path(ctx: Context, value: object, *, must_exist: bool = True) -> Path:
    """An absolute path strictly inside an allow-root with no symlink component.

    Ops that then open the path must still use ``O_NOFOLLOW``: the owner
    controls these directories and could swap a component after this check.
    """
    text = _string(value)
    if "\x00" in text:
        raise ValueError("must not contain NUL bytes")
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    if posixpath.normpath(text) != text or text.startswith("//"):
        raise ValueError("must be normalised (no '.', '..', '//' or trailing '/')")
    if len(text.encode()) >= PATH_MAX or any(len(p.encode()) > NAME_MAX for p in text.split("/")):
        raise ValueError(f"must be shorter than {PATH_MAX} bytes, each name at most {NAME_MAX}")
    path = Path(text)
    root = next((r for r in ctx.allow_roots if path.is_relative_to(r) and path != r), None)
    if root is None:
        raise ValueError("must be inside an allowed root directory")
    current = root
    parts = path.relative_to(root).parts
    for index, part in enumerate(parts):
        current = current / part
        last = index == len(parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if last and not must_exist:
                return path
            raise ValueError(f"{current} does not exist") from None
        except OSError as exc:  # EACCES, ELOOP, ...: a refusal naming the field, not a crash
            raise ValueError(f"{current}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise ValueError(f"{current} is a symlink")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{current} is not a directory")
    return path


def check_path(ctx: Context, value: object) -> Path:
    return checked_path(ctx, value, must_exist=True)


# -- the op table ------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    fields: Mapping[str, Checker]
    build: Callable[..., Any]
    doc: str = field(default="")


#: The network ops' argument specs; the whole table (with the image, staging and
#: jailer ops and every op's handler and lock) is built in :mod:`banger.helper.optable`.
NETWORK_SPECS: Mapping[str, OpSpec] = MappingProxyType(
    {
        "ping": OpSpec({}, NoArgs, "liveness check; returns the helper version"),
        "version": OpSpec({}, NoArgs, "helper and protocol version, and the op list"),
        "ensure_bridge": OpSpec({"name": check_bridge, "cidr": check_gateway}, EnsureBridgeArgs),
        "open_tap": OpSpec({"name": check_tap, "bridge": check_bridge}, OpenTapArgs),
        "open_tap_detached": OpSpec(
            {"name": check_tap},
            OpenTapDetachedArgs,
            "a bt- tap on no bridge, link down (a restored guest before re-identification)",
        ),
        "attach_tap": OpSpec(
            {"name": check_tap, "bridge": check_bridge},
            AttachTapArgs,
            "enslave the owner's detached bt- tap to a banger bridge and bring it up",
        ),
        "delete_tap": OpSpec({"name": check_tap}, DeleteTapArgs),
        "ensure_nat": OpSpec({"cidr": check_subnet, "bridge": check_bridge}, EnsureNatArgs),
        "teardown_network": OpSpec({"bridge": check_bridge}, TeardownNetworkArgs),
        "bind_dns": OpSpec({"cidr": check_gateway}, BindDnsArgs),
        "resolver_link": OpSpec(
            {"bridge": check_bridge, "cidr": check_gateway, "domain": check_domain},
            ResolverLinkArgs,
        ),
    }
)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def check_id(value: object) -> int | str:
    """Request ids echo back to the caller: a small int or a short string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be an integer or a string, got {_type_name(value)}")
    if isinstance(value, int) and not -(2**53) <= value <= 2**53:
        raise ValueError("integer out of range")
    if isinstance(value, str) and (len(value) > _ID_MAX or not value.isprintable()):
        raise ValueError(f"must be printable and at most {_ID_MAX} characters")
    return value


def validate_request(
    ctx: Context, message: Mapping[str, object], specs: Mapping[str, OpSpec] = NETWORK_SPECS
) -> Request:
    """Check a decoded request line against ``specs`` (the helper's op table's).

    Raise :class:`RequestInvalid` naming every problem.
    """
    problems: list[str] = []
    extra = sorted(set(message) - {"id", "op", "args"})
    for key in extra:
        problems.append(f"{_show(key)}: unknown field")
    request_id: int | str = 0
    if "id" not in message:
        problems.append("id: required")
    else:
        try:
            request_id = check_id(message["id"])
        except ValueError as exc:
            problems.append(f"id: {exc}")
    op = message.get("op")
    if not isinstance(op, str):
        problems.append(
            "op: required string" if op is None else f"op: must be a string, got {_type_name(op)}"
        )
        raise RequestInvalid(problems)
    spec = specs.get(op)
    if spec is None:
        problems.append(f"op: unknown op {_show(op)}")
        raise RequestInvalid(problems)
    args = message.get("args")
    if not isinstance(args, dict):
        problems.append(f"{op}.args: must be an object, got {_type_name(args)}")
        raise RequestInvalid(problems)
    values: dict[str, object] = {}
    for key in sorted(set(args) - set(spec.fields), key=str):
        problems.append(f"{op}.args.{_show(key)}: unknown field")
    for name, checker in spec.fields.items():
        if name not in args:
            problems.append(f"{op}.args.{name}: required")
            continue
        try:
            values[name] = checker(ctx, args[name])
        except ValueError as exc:
            problems.append(f"{op}.args.{name}: {exc}")
    if problems:
        raise RequestInvalid(problems)
    return Request(request_id, op, spec.build(**values))


def _show(text: str) -> str:
    """A field name safe to echo in a one-line error (repr escapes control characters)."""
    shown = text if text.isidentifier() and len(text) <= 32 else repr(text[:32])
    return shown
