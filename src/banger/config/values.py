"""Parsers for the scalar values in config.toml: sizes, ranges, names, URLs.

Each parser takes the raw TOML value (``object``: TOML gives str, int, bool,
float, lists, tables, dates) and either returns the typed value or raises
``ValueError`` with a one-line message that the loader prefixes with the field
path. Messages end with what was given, so ``vm.vcpus: must be between 1 and 32
(got 0)`` needs no further context.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from urllib.parse import urlsplit

MIB = 1024**2
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024**3, "T": 1024**4}
# "4G", "4GiB", "4GB", "512M", "1048576", "100B"; units are binary (K = 1024).
_SIZE_RE = re.compile(r"(\d+)\s*(?:([KMGT])(?:i?B)?|B)?", re.IGNORECASE)
_IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

#: The subnet prefix bounds: /16 is plenty of VMs; /29 still leaves 5 guests.
MIN_PREFIX, MAX_PREFIX = 16, 29


def describe(value: object) -> str:
    """A TOML-flavoured description of a raw value, for ``(got …)`` suffixes."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"' if len(value) <= 60 else f'string "{value[:57]}..."'
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def has_control_chars(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


def parse_size(value: object) -> int:
    """A size in bytes from ``"4G"``/``"512M"``/``"4GiB"`` or an integer number of bytes."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'must be a size like "4G" or a number of bytes (got {describe(value)})')
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                f'must be a size like "4G", "512M" or a number of bytes (got {describe(value)})'
            )
        size = int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]
    if size <= 0:
        raise ValueError(f"must be a positive size (got {describe(value)})")
    return size


def format_size(size: int) -> str:
    """The shortest exact spelling: 4294967296 → "4G", 1536 MiB → "1536M"."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def disk_size(lo: int, hi: int) -> Callable[[int], int]:
    """Bounds check for a disk size in bytes; disks are whole MiB so tools agree on them."""

    def check(size: int) -> int:
        if not lo <= size <= hi:
            raise ValueError(
                f"must be between {format_size(lo)} and {format_size(hi)} (got {format_size(size)})"
            )
        if size % MIB:
            raise ValueError(f"must be a whole number of MiB (got {size} bytes)")
        return size

    return check


def parse_memory_mib(value: object) -> int:
    """Memory in MiB: a plain integer is MiB; a size string ("2G") is converted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        size = parse_size(value)
        if size % MIB:
            raise ValueError(f"must be a whole number of MiB (got {describe(value)})")
        return size // MIB
    raise ValueError(f'must be a number of MiB or a size like "2G" (got {describe(value)})')


def between(lo: int, hi: int, unit: str = "") -> Callable[[int], int]:
    suffix = f" {unit}" if unit else ""

    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}{suffix} (got {value})")
        return value

    return check


def parse_word(value: object) -> str:
    """A non-empty string without whitespace or control characters (names, references)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {describe(value)})")
    if not value:
        raise ValueError("must not be empty")
    if any(ch.isspace() for ch in value) or has_control_chars(value):
        raise ValueError(f"must not contain whitespace (got {describe(value)})")
    return value


def parse_program(value: object) -> str:
    """A program: a bare name looked up on PATH, or an absolute path."""
    name = parse_word(value)
    if "/" in name and not name.startswith("/"):
        raise ValueError(f"must be a program name or an absolute path (got {describe(value)})")
    return name


def parse_ifname(value: object) -> str:
    """A Linux interface name we are willing to create: 1-15 of [A-Za-z0-9_-]."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {describe(value)})")
    if _IFNAME_RE.fullmatch(value) is None:
        raise ValueError(
            f"must be an interface name of 1-15 letters, digits, '_' or '-' (got {describe(value)})"
        )
    return value


def parse_subnet(value: object) -> IPv4Network:
    if isinstance(value, IPv4Network):
        net = value
    elif isinstance(value, str):
        try:
            net = IPv4Network(value, strict=True)
        except ValueError as exc:
            if "has host bits set" in str(exc):
                raise ValueError(
                    f"must be a network address, host bits are set (got {describe(value)})"
                ) from None
            raise ValueError(
                f'must be an IPv4 network like "172.30.0.0/24" (got {describe(value)})'
            ) from None
    else:
        raise ValueError(f'must be an IPv4 network like "172.30.0.0/24" (got {describe(value)})')
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise ValueError(
            f"prefix must be between /{MIN_PREFIX} and /{MAX_PREFIX} (got /{net.prefixlen})"
        )
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_reserved:
        raise ValueError(f"must not be a loopback, link-local, multicast or reserved range ({net})")
    if net.network_address == IPv4Address(0):
        raise ValueError(f"must not start at 0.0.0.0 ({net})")
    return net


def parse_ip(value: object) -> IPv4Address | IPv6Address:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address string (got {describe(value)})")
    try:
        return ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address (got {describe(value)})") from None


def parse_dns_domain(value: object) -> str:
    """A DNS name (RFC 1123 labels), lower-cased, without a trailing dot."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {describe(value)})")
    name = value.lower().removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > 253 or any(_DNS_LABEL_RE.fullmatch(lb) is None for lb in labels):
        raise ValueError(
            "must be a DNS name: dot-separated labels of letters, digits and '-' "
            f"(got {describe(value)})"
        )
    return name


def parse_url(value: object) -> str:
    """An http(s) URL with a host (mirrors); kept as written, minus a trailing slash."""
    if not isinstance(value, str):
        raise ValueError(f"must be a URL string (got {describe(value)})")
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() for ch in value)
        or has_control_chars(value)
    ):
        raise ValueError(f"must be an http:// or https:// URL with a host (got {describe(value)})")
    return value.rstrip("/")
