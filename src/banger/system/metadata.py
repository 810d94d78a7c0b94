"""Install metadata (``/etc/banger/install.toml``) and the tiny TOML writer for it.

The file says who the services run for, which versions were installed, where
every path is, and which directories the install created (so uninstall can
remove exactly those and nothing else). It is read with ``tomllib``; writing
needs only strings, integers, booleans, string lists and one level of tables,
which :func:`dump_toml` covers without a new dependency.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from banger.errors import BangerError

TomlScalar = str | int | bool | list[str]
TomlDoc = Mapping[str, TomlScalar | Mapping[str, TomlScalar]]

HEADER = "# Written by `banger system install`; read by `banger system status` and the CLI.\n"


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: TomlScalar) -> str:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    return "[" + ", ".join(_toml_string(v) for v in value) + "]"


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_string(key)


def dump_toml(doc: TomlDoc, header: str = "") -> str:
    """Scalars first, then one ``[table]`` per mapping value, in the given order."""
    lines = [header.rstrip("\n")] if header else []
    for key, value in doc.items():
        if not isinstance(value, Mapping):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in doc.items():
        if isinstance(value, Mapping):
            lines.append("")
            lines.append(f"[{_toml_key(key)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class InstallMetadata:
    owner: str
    owner_uid: int
    owner_gid: int
    version: str
    installed_at: str
    #: Versions each service was installed at (``status`` compares them).
    daemon_version: str
    helper_version: str
    #: Absolute paths as seen on the target system (not prefixed).
    paths: Mapping[str, str] = field(default_factory=dict)
    binaries: Mapping[str, str] = field(default_factory=dict)
    units: tuple[str, ...] = ()
    #: Directories the install created, deepest last; uninstall removes them if empty.
    created_dirs: tuple[str, ...] = ()

    def to_toml(self) -> str:
        doc: dict[str, TomlScalar | Mapping[str, TomlScalar]] = {
            "owner": self.owner,
            "owner_uid": self.owner_uid,
            "owner_gid": self.owner_gid,
            "version": self.version,
            "installed_at": self.installed_at,
            "units": list(self.units),
            "created_dirs": list(self.created_dirs),
            "versions": {"daemon": self.daemon_version, "helper": self.helper_version},
            "paths": dict(self.paths),
            "binaries": dict(self.binaries),
        }
        return dump_toml(doc, HEADER)

    @classmethod
    def from_toml(cls, text: str, source: str = "install.toml") -> InstallMetadata:
        try:
            data = tomllib.loads(text)
            versions = _table(data, "versions")
            return cls(
                owner=_get(data, "owner", str),
                owner_uid=_get(data, "owner_uid", int),
                owner_gid=_get(data, "owner_gid", int),
                version=_get(data, "version", str),
                installed_at=_get(data, "installed_at", str),
                daemon_version=_get(versions, "daemon", str, "versions."),
                helper_version=_get(versions, "helper", str, "versions."),
                paths=_str_table(data, "paths"),
                binaries=_str_table(data, "binaries"),
                units=tuple(_str_list(data, "units")),
                created_dirs=tuple(_str_list(data, "created_dirs")),
            )
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise BangerError(
                f"{source}: unreadable install metadata: {exc}",
                hint="reinstall with `sudo banger system install`",
            ) from None


def _get(data: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}{key}: expected {kind.__name__}")
    return value


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a table")
    return value


def _str_table(data: Mapping[str, Any], key: str) -> dict[str, str]:
    table = _table(data, key)
    return {k: _get(table, k, str, f"{key}.") for k in table}


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: expected a list of strings")
    return value
