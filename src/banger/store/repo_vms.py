"""VM rows."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address
from typing import Any, TypedDict, Unpack

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, dump_json, integrity_error, load_json, new_id
from banger.store.db import from_iso, insert_row, update_row
from banger.store.records import VMRecord, VMState
from banger.store.vm_config import VMConfig


class VMChanges(TypedDict, total=False):
    """Columns ``update_vm`` may change (the IP is owned by the lease methods)."""

    name: str
    state: VMState
    image_id: str | None
    kernel_id: str | None
    vmm: str
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    root_strategy: str | None
    mac: str | None
    tap: str | None
    pid: int | None
    pid_start_time: int | None
    last_error: str | None
    config: VMConfig
    labels: dict[str, str]
    pool: str | None


_JSON_COLUMNS = {"config", "labels"}


def _column_value(column: str, value: Any) -> Any:
    if isinstance(value, VMConfig):
        return dump_json(value.to_json())
    if column in _JSON_COLUMNS:
        return dump_json(value)
    if isinstance(value, VMState):
        return value.value
    return value


def vm_from_row(row: sqlite3.Row) -> VMRecord:
    return VMRecord(
        id=row["id"],
        name=row["name"],
        state=VMState(row["state"]),
        image_id=row["image_id"],
        kernel_id=row["kernel_id"],
        vmm=row["vmm"],
        init_mode=row["init_mode"],
        vcpus=row["vcpus"],
        memory_mib=row["memory_mib"],
        work_disk_size=row["work_disk_size"],
        root_strategy=row["root_strategy"],
        ip=IPv4Address(row["ip"]) if row["ip"] else None,
        mac=row["mac"],
        tap=row["tap"],
        pid=row["pid"],
        pid_start_time=row["pid_start_time"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        last_error=row["last_error"],
        config=VMConfig.from_json(load_json(row["config"])),
        labels=load_json(row["labels"]),
        pool=row["pool"],
    )


class VMRepo(Repo):
    def create_vm(
        self,
        *,
        name: str,
        image_id: str | None,
        kernel_id: str | None,
        vmm: str,
        init_mode: str,
        vcpus: int,
        memory_mib: int,
        work_disk_size: int,
        state: VMState = VMState.CREATING,
        root_strategy: str | None = None,
        config: VMConfig | None = None,
        labels: dict[str, str] | None = None,
        pool: str | None = None,
        id: str | None = None,
    ) -> VMRecord:
        vm_id = id or new_id()
        with self._db.transaction() as conn:
            now = self._db.now()
            values = {
                "id": vm_id,
                "name": name,
                "state": state.value,
                "image_id": image_id,
                "kernel_id": kernel_id,
                "vmm": vmm,
                "init_mode": init_mode,
                "vcpus": vcpus,
                "memory_mib": memory_mib,
                "work_disk_size": work_disk_size,
                "root_strategy": root_strategy,
                "created_at": now,
                "updated_at": now,
                "config": dump_json((config or VMConfig()).to_json()),
                "labels": dump_json(labels or {}),
                "pool": pool,
            }
            try:
                insert_row(conn, "vms", values)
            except sqlite3.IntegrityError as exc:
                raise self._vm_conflict(exc, name=name, vm_id=vm_id) from exc
            return self._vm_row(conn, "id", vm_id)

    def get_vm(self, vm_id: str) -> VMRecord:
        with self._db.reading() as conn:
            return self._vm_row(conn, "id", vm_id)

    def get_vm_by_name(self, name: str) -> VMRecord:
        with self._db.reading() as conn:
            return self._vm_row(conn, "name", name)

    def resolve_vm(self, ref: str) -> VMRecord:
        """A VM by exact name, exact id, or unambiguous id prefix (what the CLI accepts)."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT * FROM vms WHERE name = ? OR id = ? ORDER BY name = ? DESC LIMIT 1",
                (ref, ref, ref),
            ).fetchone()
            if row is not None:
                return vm_from_row(row)
            escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = conn.execute(
                "SELECT * FROM vms WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",)
            ).fetchall()
        if len(rows) == 1 and ref:
            return vm_from_row(rows[0])
        if len(rows) > 1:
            raise Conflict(
                f"VM id prefix {ref!r} is ambiguous", hint="give more characters or the name"
            )
        raise NotFound(f"no VM named {ref!r}", hint="`banger vm list` shows the VMs")

    def list_vms(self, state: VMState | None = None) -> list[VMRecord]:
        with self._db.reading() as conn:
            if state is None:
                rows = conn.execute("SELECT * FROM vms ORDER BY created_at, rowid").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM vms WHERE state = ? ORDER BY created_at, rowid", (state.value,)
                ).fetchall()
        return [vm_from_row(row) for row in rows]

    def update_vm(self, vm_id: str, **changes: Unpack[VMChanges]) -> VMRecord:
        unknown = set(changes) - set(VMChanges.__annotations__)
        if unknown:
            raise TypeError(f"update_vm cannot change {sorted(unknown)}")
        values = {column: _column_value(column, value) for column, value in changes.items()}
        with self._db.transaction() as conn:
            values["updated_at"] = self._db.now()
            try:
                found = update_row(conn, "vms", vm_id, values)
            except sqlite3.IntegrityError as exc:
                raise self._vm_conflict(exc, name=str(changes.get("name")), vm_id=vm_id) from exc
            if not found:
                raise NotFound(f"no VM with id {vm_id!r}")
            return self._vm_row(conn, "id", vm_id)

    def delete_vm(self, vm_id: str) -> None:
        """Delete the row; its IP lease and sessions go with it (ON DELETE CASCADE)."""
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,)).rowcount == 0:
                raise NotFound(f"no VM with id {vm_id!r}")

    @staticmethod
    def _vm_row(conn: sqlite3.Connection, column: str, value: str) -> VMRecord:
        row = conn.execute(f"SELECT * FROM vms WHERE {column} = ?", (value,)).fetchone()  # noqa: S608
        if row is None:
            label = "named" if column == "name" else "with id"
            raise NotFound(f"no VM {label} {value!r}", hint="`banger vm list` shows the VMs")
        return vm_from_row(row)

    @staticmethod
    def _vm_conflict(exc: sqlite3.IntegrityError, *, name: str, vm_id: str) -> Exception:
        return integrity_error(
            exc,
            {
                "vms.name": Conflict(
                    f"a VM named {name!r} already exists", hint="pick another name"
                ),
                "vms.id": Conflict(f"a VM with id {vm_id!r} already exists"),
                "vms.mac": Conflict("that MAC address is already used by another VM"),
                "vms.tap": Conflict("that tap device is already used by another VM"),
                "FOREIGN KEY": NotFound("the VM's image or kernel does not exist"),
            },
        )
