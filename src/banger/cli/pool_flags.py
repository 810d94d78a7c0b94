"""What ``--pool`` on ``vm create`` and ``vm run`` cannot go with (a pool fixes the guest).

Its own module: :mod:`banger.cli.pool_cmd` uses ``vm_cmd``'s helpers, and
``vm_cmd`` uses this, so neither imports the other both ways.
"""

from __future__ import annotations

from typing import Any

from banger.errors import InvalidArgument

#: Why a flag cannot go with --pool (the pool fixes the guest; a snapshot is another start).
_MADE = "the pool's guests are already made"
_STARTS = "a pool's guest and a snapshot are two different starting points"
_RUNNING = "a pool's guests are already running"


def pool_conflicts(pool_name: str | None, given: dict[str, Any]) -> None:
    """Refuse (exit 2, naming both flags) a flag ``--pool`` cannot go with.

    ``given``: each create flag (``--image``, ``--from-snapshot``, ``--no-start``…)
    and its value, None when absent. The first one given is named.
    """
    if pool_name is None:
        return
    for flag, value in given.items():
        if value is None:
            continue
        reason = {"--from-snapshot": _STARTS, "--no-start": _RUNNING}.get(flag, _MADE)
        raise InvalidArgument(
            f"--pool and {flag} cannot be used together: {reason}",
            hint=f"`banger pool show {pool_name}` shows what its guests are",
            field="pool",
        )
