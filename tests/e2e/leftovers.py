"""What an e2e banger holds beyond what it should: the full leftover check.

Read from the real places, as root: the store (read-only SQLite), ``ip link``
and ``nft`` inside the namespace, ``pgrep`` for the owner's processes, the
state directory's files. "Nothing created" after a refusal or a failed
operation means every kind below is empty, not only that ``vm list`` is.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass

from banger.config import Config
from tests.e2e.harness import Banger

STORE_ID = re.compile(r"[0-9a-f]{12}")


def query(b: Banger, sql: str, *params: object) -> list[tuple[object, ...]]:
    # closing(): a connection's own context manager commits but never closes, and an open
    # banger.db keeps the small test filesystem busy at unmount.
    with closing(sqlite3.connect(f"file:{b.state_dir / 'banger.db'}?mode=ro", uri=True)) as db:
        return [tuple(row) for row in db.execute(sql, params)]


@dataclass(frozen=True)
class Kept:
    """A running VM that must survive: its id, tap and VMM pid are not leaks."""

    vm_id: str
    tap: str
    pid: int


def nat_entries(b: Banger) -> list[str]:
    out = b.host("nft", "-j", "list", "table", "ip", "banger")
    if out.returncode != 0:
        return []
    comments = set()
    for item in json.loads(out.stdout).get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and "comment" in rule:
            comments.add(str(rule["comment"]))
    return sorted(comments)


def banger_leftovers(b: Banger, kept: Iterable[Kept] = ()) -> dict[str, list[str]]:
    """Everything banger holds beyond what the ``kept`` VMs need, by kind.

    VM records, taps, leases, NAT entries, the owner's VMM and disk-tool
    processes, temp files, VM directories, images and kernels half published.
    """
    kept = list(kept)
    ids = {k.vm_id for k in kept}
    net = Config().network
    found: dict[str, list[str]] = {}
    found["vm records"] = [
        f"{r[1]} ({r[0]})" for r in query(b, "SELECT id, name FROM vms") if r[0] not in ids
    ]
    found["taps"] = [t for t in b.taps() if t not in {k.tap for k in kept}]
    found["leases"] = [
        f"{r[0]} -> {r[1]}" for r in query(b, "SELECT ip, vm_id FROM ip_leases") if r[1] not in ids
    ]
    wanted_nat = f"banger-nat {net.bridge} {net.subnet}"
    found["nft entries"] = [c for c in nat_entries(b) if c != wanted_nat]
    pids = {k.pid for k in kept}
    procs = []
    for name in ("qemu-system", "qemu-img", "debugfs", "e2fsck", "resize2fs", "ssh"):
        for line in b.owner_processes(name):
            if int(line.split()[0]) not in pids and "bangerd" not in line:
                procs.append(line[:160])
    found["processes"] = procs
    tmp = b.state_dir / "tmp"
    found["temp files"] = sorted(str(p) for p in tmp.iterdir()) if tmp.is_dir() else []
    vms = b.state_dir / "vms"
    vm_dirs = [p for p in vms.iterdir() if STORE_ID.fullmatch(p.name)] if vms.is_dir() else []
    found["vm directories"] = sorted(p.name for p in vm_dirs if p.name not in ids)
    found["temp files"] += sorted(str(t) for d in vm_dirs for t in d.glob(".*.tmp-*"))
    for kind, table in (("images", "images"), ("kernels", "kernels")):
        rows = {str(r[0]) for r in query(b, f"SELECT id FROM {table}")}
        directory = b.state_dir / kind
        dirs = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
        found[f"half-published {kind}"] = sorted(
            [f"{d}: directory without a record" for d in dirs - rows]
            + [f"{r}: record without a directory" for r in rows - dirs]
        )
    return found


def vm_kept(b: Banger, name: str) -> Kept:
    """A VM that exists on purpose (running or not): its records and files are not leaks."""
    shown = json.loads(b.banger("vm", "show", name, "--json").stdout)
    pid = shown.get("pid")
    return Kept(str(shown["id"]), str(shown.get("tap") or ""), int(pid) if pid else -1)


def assert_nothing_left(b: Banger, kept: Iterable[Kept] = ()) -> None:
    """Every kind of :func:`banger_leftovers` is empty (the ``kept`` VMs aside)."""
    found = {kind: items for kind, items in banger_leftovers(b, kept).items() if items}
    assert not found, f"left behind: {found}"
