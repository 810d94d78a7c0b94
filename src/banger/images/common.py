"""Small things every image-building module shares: progress callbacks, the
root check, and name validation."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from banger.errors import BangerError, InvalidArgument

#: Receives one human-readable line per step (or per line of tool output).
Progress = Callable[[str], None]


def no_progress(_line: str) -> None:
    """The default progress callback: drop the line."""


class NeedsRoot(BangerError):
    """An image operation that must run as root (inside banger-helper)."""

    http_status = 500
    exit_code = 6


def require_root(what: str) -> None:
    """Refuse to start ``what`` without root, instead of failing half-way.

    Image builds write files owned by other users (``/etc/shadow`` is
    root:shadow), create device nodes and chroot for package scripts; a build
    as an ordinary user would produce a tree owned by that user, which boots
    into a broken guest.
    """
    if os.geteuid() != 0:
        raise NeedsRoot(
            f"{what} needs root",
            hint="image builds run inside banger-helper; as a test, run as root",
        )


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_image_name(name: str) -> str:
    """An image name: lowercase letters, digits, ``.``, ``_``, ``-``; 1-63 characters."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"image name {name!r} is invalid: use 1-63 lowercase letters, digits, '.', '_', '-'"
            " starting with a letter or digit",
            hint="for example: debian-bookworm",
        )
    return name
