"""Pool rows (schema v6): what a pool's guests are, its template, its last error.

A pool's ready guests are VM rows naming it in ``vms.pool``
(:meth:`PoolRepo.pool_members`); taking one clears that column and renames the
VM in one transaction (:meth:`PoolRepo.take_member`), so two takes can never
get the same guest.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict, Unpack

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, integrity_error, new_id
from banger.store.db import from_iso, insert_row, update_row
from banger.store.records import VMRecord, VMState
from banger.store.repo_vms import vm_from_row


@dataclass(frozen=True)
class PoolRecord:
    id: str
    name: str
    #: The image and kernel refs the pool was given; None follows the default.
    image: str | None
    kernel: str | None
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    size: int
    #: The template snapshot's id, and the key of the inputs it was made from.
    template_id: str | None
    template_key: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class PoolChanges(TypedDict, total=False):
    image: str | None
    kernel: str | None
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    size: int
    template_id: str | None
    template_key: str | None
    error: str | None


def pool_from_row(row: sqlite3.Row) -> PoolRecord:
    return PoolRecord(
        id=row["id"],
        name=row["name"],
        image=row["image"],
        kernel=row["kernel"],
        init_mode=row["init_mode"],
        vcpus=row["vcpus"],
        memory_mib=row["memory_mib"],
        work_disk_size=row["work_disk_size"],
        size=row["size"],
        template_id=row["template_id"],
        template_key=row["template_key"],
        error=row["error"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


class PoolRepo(Repo):
    def create_pool(
        self,
        *,
        name: str,
        image: str | None,
        kernel: str | None,
        init_mode: str,
        vcpus: int,
        memory_mib: int,
        work_disk_size: int,
        size: int,
    ) -> PoolRecord:
        pool_id = new_id()
        with self._db.transaction() as conn:
            now = self._db.now()
            try:
                insert_row(
                    conn,
                    "pools",
                    {
                        "id": pool_id,
                        "name": name,
                        "image": image,
                        "kernel": kernel,
                        "init_mode": init_mode,
                        "vcpus": vcpus,
                        "memory_mib": memory_mib,
                        "work_disk_size": work_disk_size,
                        "size": size,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc, {"pools.name": Conflict(f"name: a pool named {name!r} already exists")}
                ) from exc
            return self._pool_row(conn, "id", pool_id)

    def get_pool(self, name: str) -> PoolRecord:
        with self._db.reading() as conn:
            return self._pool_row(conn, "name", name)

    def list_pools(self) -> list[PoolRecord]:
        with self._db.reading() as conn:
            rows = conn.execute("SELECT * FROM pools ORDER BY name").fetchall()
        return [pool_from_row(row) for row in rows]

    def update_pool(self, pool_id: str, **changes: Unpack[PoolChanges]) -> PoolRecord:
        unknown = set(changes) - set(PoolChanges.__annotations__)
        if unknown:
            raise TypeError(f"update_pool cannot change {sorted(unknown)}")
        with self._db.transaction() as conn:
            values = {**changes, "updated_at": self._db.now()}
            if not update_row(conn, "pools", pool_id, values):
                raise NotFound(f"no pool with id {pool_id!r}")
            return self._pool_row(conn, "id", pool_id)

    def delete_pool(self, pool_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE vms SET pool = NULL WHERE pool = (SELECT name FROM pools WHERE id = ?)",
                (pool_id,),
            )
            conn.execute("DELETE FROM pools WHERE id = ?", (pool_id,))

    def pool_members(self, name: str) -> list[VMRecord]:
        """The VMs that are (or are being made into) this pool's ready guests."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT * FROM vms WHERE pool = ? ORDER BY created_at, rowid", (name,)
            ).fetchall()
        return [vm_from_row(row) for row in rows]

    def take_member(self, vm_id: str, pool: str, new_name: str) -> VMRecord:
        """The ready guest becomes the owner's VM ``new_name``; NotFound when another take
        (or a removal) got it first, Conflict when the name is taken."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM vms WHERE id = ? AND pool = ? AND state = ?",
                (vm_id, pool, VMState.RUNNING.value),
            ).fetchone()
            if row is None:
                raise NotFound(f"pool {pool}: that guest is no longer ready")
            try:
                conn.execute(
                    "UPDATE vms SET pool = NULL, name = ?, updated_at = ? WHERE id = ?",
                    (new_name, self._db.now(), vm_id),
                )
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc,
                    {
                        "vms.name": Conflict(
                            f"name: a VM named {new_name!r} already exists",
                            hint="pick another name",
                        )
                    },
                ) from exc
            return vm_from_row(conn.execute("SELECT * FROM vms WHERE id = ?", (vm_id,)).fetchone())

    def retire_member(self, vm_id: str, pool: str) -> bool:
        """Mark a pool's guest for deletion so no take can get it; False when a take
        got it first (it is the owner's VM now and must be left alone)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE vms SET state = ?, updated_at = ? WHERE id = ? AND pool = ?",
                (VMState.DELETING.value, self._db.now(), vm_id, pool),
            )
            return cursor.rowcount == 1

    @staticmethod
    def _pool_row(conn: sqlite3.Connection, column: str, value: str) -> PoolRecord:
        # ``column`` comes from this module, never from a request.
        row = conn.execute(f"SELECT * FROM pools WHERE {column} = ?", (value,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFound(
                f"no pool named {value!r}" if column == "name" else f"no pool with id {value!r}",
                hint="banger pool list shows the pools",
            )
        return pool_from_row(row)
