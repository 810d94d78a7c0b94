"""banger's taps: how one is named, and which ones on this host are this owner's.

A VM's tap is ``bt-`` + the first 12 characters of its id (15 bytes, the
Linux interface-name limit). The helper makes only such taps and touches no
others; bangerd's reconciliation and doctor's "stray taps" check read them
from the kernel's view without privileges. A tap is this owner's if it is
enslaved to the owner's bridge or is a tun device owned by the owner's uid,
so neither ever counts another owner's taps.
"""

from __future__ import annotations

from pathlib import Path

SYS_NET = Path("/sys/class/net")
#: Taps the helper creates are named with this prefix, and it touches no others.
TAP_PREFIX = "bt-"


def tap_name(vm_id: str) -> str:
    """``bt-`` + the id's first 12 characters: 15 bytes, the Linux limit."""
    return f"{TAP_PREFIX}{vm_id[:12].lower()}"


def banger_taps(bridge: str, uid: int, sys_net: Path = SYS_NET) -> list[str]:
    """``bt-…`` taps on ``bridge`` or owned by ``uid``, sorted."""
    try:
        names = sorted(entry.name for entry in sys_net.iterdir())
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith(TAP_PREFIX):
            continue
        on_bridge = (sys_net / bridge / "brif" / name).exists()
        if on_bridge or _tun_owner(sys_net / name) == uid:
            found.append(name)
    return found


def _tun_owner(link: Path) -> int | None:
    try:
        value = int((link / "owner").read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None  # -1: no owner set
