"""``[[file_sync]]``: which host files the owner copies onto each VM's work disk.

The rules are deliberately narrow because the daemon reads these files on the
owner's behalf and writes them into a guest:

- ``host`` is locked to the owner's home. ``~/…`` expands against the owner's
  home; an absolute path must lie inside it. Empty, relative, ``..`` segments,
  ``~user/…`` and the home itself are refused. The path is normalised (``//``,
  ``.`` and trailing ``/`` removed) but symlinks are NOT resolved: a symlink
  named by ``host`` is followed at sync time, symlinks nested inside a synced
  directory are skipped then.
- ``guest`` lies under ``~/`` or ``/root/`` (the work disk is ``/root`` in the
  guest) and is stored relative to the work disk root, e.g.
  ``.config/gh/hosts.yml``.
- ``mode`` is an octal string applied to files (directories keep their own
  permissions); default ``0600``.

Control characters are refused in both paths: the work disk is provisioned by a
line-oriented debugfs script, where a newline in a name would be a new command.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from banger.config.values import describe, has_control_chars

DEFAULT_MODE = 0o600
#: Where the work disk is mounted in the guest; ``guest`` paths are relative to it.
GUEST_HOME = PurePosixPath("/root")
_MODE_RE = re.compile(r"(?:0o)?([0-7]+)")


def _normalise_absolute(path: str) -> str:
    """Collapse ``//``, ``.`` and trailing ``/`` without touching the filesystem."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def parse_host(value: object, home: Path) -> Path:
    """Validate a ``host`` value against the owner's ``home``; returns an absolute path."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {describe(value)})")
    if not value:
        raise ValueError("must not be empty")
    if has_control_chars(value):
        raise ValueError("must not contain control characters")
    home_str = _normalise_absolute(posixpath.abspath(str(home)))
    if value.startswith("~"):
        if value != "~" and not value.startswith("~/"):
            raise ValueError(
                f"~user paths are not supported, use ~/… (got {describe(value)}); "
                "file_sync only reads your own home"
            )
        candidate = home_str + "/" + value[1:]
    elif value.startswith("/"):
        candidate = value
    else:
        raise ValueError(f"must start with ~/ or be an absolute path (got {describe(value)})")
    if ".." in value.split("/"):
        raise ValueError(f"must not contain '..' segments (got {describe(value)})")
    normalised = _normalise_absolute(candidate)
    if normalised == home_str:
        raise ValueError(f"must name a file or directory inside {home_str}, not the home itself")
    if not normalised.startswith(home_str.rstrip("/") + "/"):
        raise ValueError(
            f"must be inside your home {home_str} (got {describe(value)}); "
            "file_sync never reads host files outside it"
        )
    return Path(normalised)


#: Work-disk paths banger writes itself (relative to ``/root``; see disk/workdisk.py):
#: no ``[[file_sync]]`` entry may name them, whether ``config validate`` or a
#: ``vm start`` reads the entry (this is the one rule both use).
RESERVED_FILES = frozenset({".ssh/authorized_keys"})
RESERVED_TREES = (".banger",)
RESERVED_HINT = "banger writes ~/.ssh/authorized_keys and ~/.banger/ itself"


def is_reserved(guest_rel: str) -> bool:
    """Whether ``guest_rel`` (relative to ``/root``) is one of banger's own paths."""
    if guest_rel in RESERVED_FILES:
        return True
    return any(guest_rel == t or guest_rel.startswith(t + "/") for t in RESERVED_TREES)


def parse_guest(value: object) -> str:
    """Validate a ``guest`` value; returns the path relative to the work disk root."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {describe(value)})")
    if not value:
        raise ValueError("must not be empty")
    if has_control_chars(value):
        raise ValueError("must not contain control characters")
    if value.startswith("~"):
        if value != "~" and not value.startswith("~/"):
            raise ValueError(
                f"~user paths are not supported, use ~/… (got {describe(value)}); "
                "the guest home is /root"
            )
        rest = value[1:]
    elif value == "/root" or value.startswith("/root/"):
        rest = value[len("/root") :]
    else:
        raise ValueError(
            f"must be under ~/ or /root/ (got {describe(value)}); "
            "the work disk is /root in the guest"
        )
    parts = rest.split("/")
    if ".." in parts:
        raise ValueError(f"must not contain '..' segments (got {describe(value)})")
    kept = [part for part in parts if part not in ("", ".")]
    if not kept:
        raise ValueError(
            "must name a path inside ~/ or /root/, not the directory itself "
            f"(got {describe(value)})"
        )
    rel = "/".join(kept)
    if is_reserved(rel):
        raise ValueError(f"~/{rel} is managed by banger and cannot be synced ({RESERVED_HINT})")
    return rel


def parse_mode(value: object) -> int:
    """An octal permission string (``"0755"``, ``"600"``, ``"0o644"``) up to ``07777``."""
    if not isinstance(value, str):
        raise ValueError(
            f'must be an octal string like "0600" (got {describe(value)}); '
            "quote it so TOML does not read it as decimal"
        )
    match = _MODE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f'must be an octal string like "0600" (got {describe(value)})')
    mode = int(match.group(1), 8)
    if mode > 0o7777:
        raise ValueError(f"must be at most 07777 (got {describe(value)})")
    return mode


class FileSync(BaseModel):
    """One ``[[file_sync]]`` entry, validated and normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: Path = Field(
        description=(
            "Host file or directory to copy: `~/…` or an absolute path inside your home. "
            "No `..`, no `~user`. A symlink named here is followed while it stays in the "
            "home; symlinks nested in a directory are skipped. Missing paths are skipped "
            "with a warning."
        )
    )
    guest: str = Field(
        description=(
            "Destination in the guest, under `~/` or `/root/` (the work disk). "
            "Stored relative to the work disk root."
        )
    )
    mode: Annotated[int, BeforeValidator(parse_mode)] = Field(
        default=DEFAULT_MODE,
        description=(
            'Octal permissions for copied files, as a string ("0600", "0755"). '
            "Directories keep their own permissions."
        ),
    )

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: object, info: ValidationInfo) -> Path:
        context: dict[str, Any] = info.context or {}
        return parse_host(value, Path(context.get("home") or Path.home()))

    @field_validator("guest", mode="before")
    @classmethod
    def _guest(cls, value: object) -> str:
        return parse_guest(value)

    @property
    def guest_path(self) -> PurePosixPath:
        """The absolute destination inside the guest, e.g. ``/root/.config/gh/hosts.yml``."""
        return GUEST_HOME / self.guest

    @property
    def guest_display(self) -> str:
        """How the destination is shown to the user (and written back): ``~/…``."""
        return f"~/{self.guest}"

    @field_serializer("guest", when_used="json")
    def _guest_json(self, guest: str) -> str:
        return f"~/{guest}"

    @field_serializer("mode", when_used="json")
    def _mode_json(self, mode: int) -> str:
        return f"{mode:04o}"
