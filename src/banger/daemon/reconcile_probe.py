"""What is really there, read without privileges: banger's taps and VMM processes.

Both are read from the kernel's own views (``/sys/class/net``, ``/proc``) by
the owner daemon, which runs in the same network namespace as its bridge.
Only things that are provably this owner's are reported, so reconciliation
never touches another owner's (or another daemon's) resources:

- a tap is ours if it is named ``bt-…`` (the only taps the helper makes) and
  is enslaved to our bridge or is a tun device owned by our uid;
- a VMM process is ours if it runs as our uid and its command line names a
  file under our ``vms/`` directory (QEMU's ``-drive file=…``, Firecracker's
  config), which also tells which VM it serves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from banger.procinfo import process_start_time

SYS_NET = Path("/sys/class/net")
PROC = Path("/proc")
TAP_PREFIX = "bt-"


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


@dataclass(frozen=True)
class VMMProc:
    pid: int
    start_time: int
    vm_id: str


def vmm_processes(vms_dir: Path, uid: int, proc_root: Path = PROC) -> list[VMMProc]:
    """Processes of ``uid`` whose argv names a file under ``vms_dir``, by pid."""
    marker = f"{vms_dir.absolute()}/"
    found = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        vm_id = _vm_in_argv(argv, marker)
        if vm_id is None:
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        start = process_start_time(pid)
        if start is not None:
            found.append(VMMProc(pid, start, vm_id))
    return sorted(found, key=lambda p: p.pid)


def _vm_in_argv(argv: list[bytes], marker: str) -> str | None:
    needle = marker.encode()
    for arg in argv:
        at = arg.find(needle)
        if at < 0:
            continue
        rest = arg[at + len(needle) :].decode(errors="replace")
        vm_id = rest.split("/", 1)[0].split(",", 1)[0]
        if vm_id and "/" in rest:
            return vm_id
    return None
