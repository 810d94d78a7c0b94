"""Find the Debian mirror the host already uses, from its apt sources.

banger never names a mirror host of its own: a distro build uses either the
mirror configured as ``images.debian_mirror`` or the first Debian archive
(``main`` component, a Debian suite, not the security archive) that the host's
apt is configured for. Both formats are read, in apt's order:
``/etc/apt/sources.list``, then ``/etc/apt/sources.list.d/*.list`` and
``*.sources`` (deb822) sorted by name. Disabled entries are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from banger.errors import InvalidArgument, NotFound

#: Names that identify a Debian archive entry (codenames and aliases). Only
#: used to tell a Debian source from a third-party one (which also says
#: "main"); which suite gets built is validated separately.
DEBIAN_SUITES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "stable",
        "testing",
        "unstable",
        "oldstable",
        "oldoldstable",
    }
)


@dataclass(frozen=True)
class AptSource:
    types: tuple[str, ...]
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line(text: str) -> list[AptSource]:
    """Entries of a one-line-style ``sources.list`` file."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # "[ arch=amd64 signed-by=... ]" options sit between type and URI.
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) < 3 or fields[0] not in ("deb", "deb-src"):
            continue
        out.append(AptSource((fields[0],), fields[1], (fields[2],), tuple(fields[3:])))
    return out


def parse_deb822(text: str) -> list[AptSource]:
    """Entries of a deb822-style ``.sources`` file (stanzas split by blank lines)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:  # continuation line
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        types = tuple(fields.get("types", "").split())
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            out.append(AptSource(types, uri, suites, components))
    return out


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every entry of the host's apt configuration, in apt's reading order."""
    entries: list[AptSource] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        entries += parse_one_line(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                entries += parse_deb822(path.read_text(errors="replace"))
    return entries


def _is_debian_archive(entry: AptSource) -> bool:
    if "deb" not in entry.types or "main" not in entry.components:
        return False
    if entry.uri.rstrip("/").endswith("-security"):
        return False
    return any(suite in DEBIAN_SUITES for suite in entry.suites)


def debian_mirror_from(entries: list[AptSource]) -> str | None:
    """The URI of the first Debian archive entry, or None."""
    for entry in entries:
        if _is_debian_archive(entry):
            return entry.uri
    return None


def check_mirror(mirror: str) -> str:
    """A mirror URL: http or https, a host, no whitespace; it reaches a root helper."""
    parts = urlsplit(mirror)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c.isspace() or ord(c) < 32 for c in mirror)
        or parts.query
        or parts.fragment
    ):
        raise InvalidArgument(
            f"images.debian_mirror {mirror!r} is not an http(s) URL of a Debian archive",
            hint="for example the URI of the 'deb' line for 'main' in /etc/apt/sources.list",
        )
    return mirror


def resolve_debian_mirror(mirror: str | None, etc_apt: Path = Path("/etc/apt")) -> str:
    """The explicit mirror if given, else the host's, validated."""
    if mirror:
        return check_mirror(mirror)
    found = debian_mirror_from(host_sources(etc_apt))
    if found is None:
        raise NotFound(
            f"no Debian archive with 'main' found in the host's apt sources under {etc_apt}",
            hint="set images.debian_mirror in config.toml to the URL of a Debian mirror",
        )
    return check_mirror(found)
