"""VM snapshots (schema v5) and the one lease rule a restore needs: this exact address.

A restored guest keeps the address its memory holds, so a restore does not
ask for *a* free address (``allocate_ip``) but claims the snapshot's own
(:meth:`SnapshotRepo.claim_ip`), refused — naming the holder — while another
VM has it. The lease's PRIMARY KEY makes that race-free.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address
from typing import Any

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, dump_json, integrity_error, load_json, new_id
from banger.store.db import from_iso, insert_row


@dataclass(frozen=True)
class SnapshotRecord:
    id: str
    name: str
    #: The VM it was taken from (which may be gone since).
    vm_id: str
    vm_name: str
    vmm: str
    image_id: str | None
    kernel_id: str | None
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    ip: IPv4Address
    mac: str
    size: int
    created_at: datetime
    meta: dict[str, Any] = field(hash=False)


class AddressTaken(Conflict):
    """The address a restore needs is leased to another VM."""

    def __init__(self, ip: IPv4Address, holder: str) -> None:
        super().__init__(
            f"address {ip} is held by VM {holder}: a restored guest keeps its address",
            hint=f"delete VM {holder} first (banger vm rm {holder}), then restore",
        )
        self.ip = ip
        self.holder = holder


def snapshot_from_row(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        id=row["id"],
        name=row["name"],
        vm_id=row["vm_id"],
        vm_name=row["vm_name"],
        vmm=row["vmm"],
        image_id=row["image_id"],
        kernel_id=row["kernel_id"],
        init_mode=row["init_mode"],
        vcpus=row["vcpus"],
        memory_mib=row["memory_mib"],
        work_disk_size=row["work_disk_size"],
        ip=IPv4Address(row["ip"]),
        mac=row["mac"],
        size=row["size"],
        created_at=from_iso(row["created_at"]),
        meta=load_json(row["meta"]),
    )


class SnapshotRepo(Repo):
    def create_snapshot(
        self,
        *,
        name: str,
        vm_id: str,
        vm_name: str,
        vmm: str,
        image_id: str | None,
        kernel_id: str | None,
        init_mode: str,
        vcpus: int,
        memory_mib: int,
        work_disk_size: int,
        ip: IPv4Address,
        mac: str,
        size: int,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> SnapshotRecord:
        snapshot_id = id or new_id()
        values = {
            "id": snapshot_id,
            "name": name,
            "vm_id": vm_id,
            "vm_name": vm_name,
            "vmm": vmm,
            "image_id": image_id,
            "kernel_id": kernel_id,
            "init_mode": init_mode,
            "vcpus": vcpus,
            "memory_mib": memory_mib,
            "work_disk_size": work_disk_size,
            "ip": str(ip),
            "mac": mac,
            "size": size,
            "meta": dump_json(meta or {}),
        }
        with self._db.transaction() as conn:
            try:
                insert_row(conn, "snapshots", {**values, "created_at": self._db.now()})
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc,
                    {
                        "snapshots.name": Conflict(
                            f"name: a snapshot named {name!r} already exists",
                            hint="pick another name (--name), or remove it: "
                            f"banger vm snapshot-rm {name}",
                        ),
                        "FOREIGN KEY": NotFound("the snapshot's image or kernel is gone"),
                    },
                ) from exc
            return self._snapshot_row(conn, "id", snapshot_id)

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        with self._db.reading() as conn:
            return self._snapshot_row(conn, "id", snapshot_id)

    def resolve_snapshot(self, ref: str) -> SnapshotRecord:
        """By name first, then by id."""
        with self._db.reading() as conn:
            for column in ("name", "id"):
                row = conn.execute(
                    f"SELECT * FROM snapshots WHERE {column} = ?",  # noqa: S608
                    (ref,),
                ).fetchone()
                if row is not None:
                    return snapshot_from_row(row)
        raise NotFound(f"no snapshot named {ref!r}", hint="list them: banger vm snapshots")

    def list_snapshots(self, vm_id: str | None = None) -> list[SnapshotRecord]:
        with self._db.reading() as conn:
            if vm_id is None:
                rows = conn.execute("SELECT * FROM snapshots ORDER BY created_at, name")
            else:
                rows = conn.execute(
                    "SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created_at, name", (vm_id,)
                )
            return [snapshot_from_row(row) for row in rows.fetchall()]

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._db.transaction() as conn:
            cursor = conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"no snapshot with id {snapshot_id!r}")

    def claim_ip(self, vm_id: str, ip: IPv4Address) -> IPv4Address:
        """Lease exactly ``ip`` to ``vm_id`` (and record it on the VM row).

        Refused with :class:`AddressTaken` while another VM holds it; a VM that
        already holds another address gives that one up.
        """
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT l.vm_id, v.name FROM ip_leases l JOIN vms v ON v.id = l.vm_id"
                " WHERE l.ip = ?",
                (str(ip),),
            ).fetchone()
            if row is not None:
                if row[0] == vm_id:
                    return ip
                raise AddressTaken(ip, row[1])
            if conn.execute("SELECT 1 FROM vms WHERE id = ?", (vm_id,)).fetchone() is None:
                raise NotFound(f"no VM with id {vm_id!r}")
            conn.execute("DELETE FROM ip_leases WHERE vm_id = ?", (vm_id,))
            conn.execute(
                "INSERT INTO ip_leases (ip, vm_id, allocated_at) VALUES (?, ?, ?)",
                (str(ip), vm_id, self._db.now()),
            )
            conn.execute("UPDATE vms SET ip = ? WHERE id = ?", (str(ip), vm_id))
            return ip

    def ip_holder(self, ip: IPv4Address) -> str | None:
        """The name of the VM leasing ``ip``, if any."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT v.name FROM ip_leases l JOIN vms v ON v.id = l.vm_id WHERE l.ip = ?",
                (str(ip),),
            ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _snapshot_row(conn: sqlite3.Connection, column: str, value: str) -> SnapshotRecord:
        row = conn.execute(
            f"SELECT * FROM snapshots WHERE {column} = ?",  # noqa: S608
            (value,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no snapshot with {column} {value!r}")
        return snapshot_from_row(row)
