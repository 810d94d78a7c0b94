"""The kernel's mount table (``/proc/<pid>/mountinfo``), read the one way banger reads it.

Standard library only: the root helper uses it (a staging directory with a mount
below it is never removed), as do image builds (detach what a dead mmdebstrap left
mounted) and the reliability suite's leftover checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mount_points(mountinfo: bytes) -> list[str]:
    """The mount points (field 5) of a ``/proc/<pid>/mountinfo`` table, in its order.

    The kernel writes a space, tab, newline or backslash in a path as a 3-digit
    octal escape (``\\040``); undone here on the raw bytes, so a name that is
    not UTF-8 comes back as the same ``os.fsdecode`` string a path would.
    """
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            points.append(os.fsdecode(raw))
    return points


def mounts_below(
    directory: Path | str, mountinfo: Path = Path("/proc/self/mountinfo")
) -> list[str]:
    """Mount points strictly below ``directory`` in the mount table ``mountinfo`` (as written
    there: real paths — pass a resolved ``directory``); empty when the table is unreadable."""
    prefix = f"{str(directory).rstrip('/')}/"
    try:
        table = mountinfo.read_bytes()
    except OSError:
        return []
    return [p for p in mount_points(table) if p.startswith(prefix) and len(p) > len(prefix)]
