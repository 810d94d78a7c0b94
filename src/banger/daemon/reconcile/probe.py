"""What is really there, read without privileges: this owner's VMM processes.

Read from the kernel's own view (``/proc``) by the owner daemon. Only
processes that are provably this owner's are reported, so reconciliation
never touches another owner's (or another daemon's) VMs: a VMM process is
ours if it runs as our uid and its command line names a file under our
``vms/`` directory (QEMU's ``-drive file=…``, Firecracker's config), which
also tells which VM it serves. Taps are read by :func:`banger.net.taps.banger_taps`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from banger.procinfo import process_start_time

PROC = Path("/proc")


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
