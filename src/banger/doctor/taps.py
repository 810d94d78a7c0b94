"""The ``stray taps`` doctor check: ``bt-…`` taps of this owner that no VM accounts for.

A tap outlives its VM when the helper could not delete it: killed in the
middle of ``open_tap``, or down when a VM stopped. bangerd deletes such a tap
once a helper answers again (:mod:`banger.daemon.owed_taps`), and every
bangerd start deletes any tap no running VM owns; this check shows one that is
still there, and changes nothing. The taps come from the kernel's view with
the probe reconciliation uses (``bt-…`` on this owner's bridge or owned by
this uid), the VMs from the store opened read-only, so it also works with
bangerd down. The store is read first: a VM is recorded before its tap is
made and its tap deleted before its record, so a tap seen after its record
is never called stray (a ``vm start`` between making the tap and recording
it is the one brief exception).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from banger.doctor.dns import configured_network
from banger.doctor.model import CheckResult
from banger.net.taps import SYS_NET, banger_taps, tap_name

if TYPE_CHECKING:
    from banger.doctor.model import DoctorContext

NAME = "stray taps"
#: States of a VM that has no tap, made or in the making.
_TAPLESS = ("stopped", "failed")

VMRow = tuple[str, str | None, str]  # id, tap, state


def read_vms(db: Path) -> list[VMRow]:
    """(id, tap, state) of every VM record; none without a store. Read-only, never migrated."""
    if not db.exists():
        return []
    uri = f"{db.absolute().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as conn:
        rows = conn.execute("SELECT id, tap, state FROM vms").fetchall()
    return [(str(i), None if tap is None else str(tap), str(state)) for i, tap, state in rows]


def accounted_for(vms: Iterable[VMRow]) -> set[str]:
    """Taps VM records explain: a recorded tap, or ``bt-<id>`` of a VM that may be making one."""
    taps = set()
    for vm_id, tap, state in vms:
        if tap is not None:
            taps.add(tap)
        if state not in _TAPLESS:
            taps.add(tap_name(vm_id))
    return taps


def decide(stray: list[str], bridge: str) -> CheckResult:
    if not stray:
        return CheckResult(NAME, "pass", f"every bt- tap on {bridge} or of this user has its VM")
    more = f" (and {len(stray) - 1} more: {', '.join(stray[1:])})" if len(stray) > 1 else ""
    return CheckResult(
        NAME,
        "warn",
        f"{stray[0]}{more}: a tap no VM of this store accounts for (left by a helper that "
        "died before it answered, or was down when the VM stopped)",
        "bangerd deletes it within seconds once banger-helper answers, or at its next start; "
        f"to remove it now: `sudo ip link delete {stray[0]}`",
    )


def check_stray_taps(ctx: DoctorContext, *, sys_net: Path = SYS_NET) -> CheckResult:
    _gateway, bridge, _domain = configured_network(ctx.paths)
    try:
        explained = accounted_for(read_vms(ctx.paths.db))  # before the taps: see the docstring
    except (OSError, sqlite3.Error) as exc:
        # Another user's BANGER_HOME, or a store being replaced: say so, do not guess.
        return CheckResult(
            NAME,
            "warn",
            f"not checked: cannot read the VM store {ctx.paths.db}: {exc}",
            "run doctor as the user whose banger state this is",
        )
    taps = banger_taps(bridge, os.getuid(), sys_net)
    return decide([t for t in taps if t not in explained], bridge)
