"""Image and kernel rows: the artifacts VMs are built from."""

from __future__ import annotations

import sqlite3
from typing import Any, TypedDict, Unpack

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, dump_json, integrity_error, load_json, new_id
from banger.store.db import from_iso, insert_row, update_row
from banger.store.records import ImageRecord, KernelRecord


class ImageChanges(TypedDict, total=False):
    name: str
    source: str
    digest: str | None
    size: int
    meta: dict[str, Any]


class KernelChanges(TypedDict, total=False):
    name: str
    source: str
    version: str | None
    sha256: str | None
    meta: dict[str, Any]


def image_from_row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        digest=row["digest"],
        size=row["size"],
        created_at=from_iso(row["created_at"]),
        meta=load_json(row["meta"]),
    )


def kernel_from_row(row: sqlite3.Row) -> KernelRecord:
    return KernelRecord(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        version=row["version"],
        sha256=row["sha256"],
        created_at=from_iso(row["created_at"]),
        meta=load_json(row["meta"]),
    )


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


class ArtifactRepo(Repo):
    # -- images ---------------------------------------------------------------------
    def create_image(
        self,
        *,
        name: str,
        source: str,
        digest: str | None = None,
        size: int = 0,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> ImageRecord:
        values = {"name": name, "source": source, "digest": digest, "size": size}
        return image_from_row(self._insert_artifact("images", "image", id, values, meta))

    def get_image(self, image_id: str) -> ImageRecord:
        return image_from_row(self._artifact_row("images", "image", "id", image_id))

    def get_image_by_name(self, name: str) -> ImageRecord:
        return image_from_row(self._artifact_row("images", "image", "name", name))

    def list_images(self) -> list[ImageRecord]:
        return [image_from_row(row) for row in self._artifact_rows("images")]

    def update_image(self, image_id: str, **changes: Unpack[ImageChanges]) -> ImageRecord:
        self._update_artifact("images", "image", image_id, dict(changes), ImageChanges)
        return self.get_image(image_id)

    def delete_image(self, image_id: str) -> None:
        self._delete_artifact("images", "image", image_id)

    # -- kernels --------------------------------------------------------------------
    def create_kernel(
        self,
        *,
        name: str,
        source: str,
        version: str | None = None,
        sha256: str | None = None,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> KernelRecord:
        values = {"name": name, "source": source, "version": version, "sha256": sha256}
        return kernel_from_row(self._insert_artifact("kernels", "kernel", id, values, meta))

    def get_kernel(self, kernel_id: str) -> KernelRecord:
        return kernel_from_row(self._artifact_row("kernels", "kernel", "id", kernel_id))

    def get_kernel_by_name(self, name: str) -> KernelRecord:
        return kernel_from_row(self._artifact_row("kernels", "kernel", "name", name))

    def list_kernels(self) -> list[KernelRecord]:
        return [kernel_from_row(row) for row in self._artifact_rows("kernels")]

    def update_kernel(self, kernel_id: str, **changes: Unpack[KernelChanges]) -> KernelRecord:
        self._update_artifact("kernels", "kernel", kernel_id, dict(changes), KernelChanges)
        return self.get_kernel(kernel_id)

    def delete_kernel(self, kernel_id: str) -> None:
        self._delete_artifact("kernels", "kernel", kernel_id)

    # -- shared -----------------------------------------------------------------------
    def _insert_artifact(
        self,
        table: str,
        noun: str,
        row_id: str | None,
        values: dict[str, Any],
        meta: dict[str, Any] | None,
    ) -> sqlite3.Row:
        row_id = row_id or new_id()
        with self._db.transaction() as conn:
            row = {"id": row_id, **values, "created_at": self._db.now()}
            row["meta"] = dump_json(meta or {})
            try:
                insert_row(conn, table, row)
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc,
                    {
                        f"{table}.name": Conflict(
                            f"{_a(noun)} named {values['name']!r} already exists",
                            hint="remove it first or pick another name",
                        ),
                        f"{table}.id": Conflict(f"{_a(noun)} with id {row_id!r} already exists"),
                    },
                ) from exc
            return self._artifact_row(table, noun, "id", row_id)

    def _artifact_row(self, table: str, noun: str, column: str, value: str) -> sqlite3.Row:
        with self._db.reading() as conn:
            row = conn.execute(
                f"SELECT * FROM {table} WHERE {column} = ?",  # noqa: S608
                (value,),
            ).fetchone()
        if row is None:
            label = "named" if column == "name" else "with id"
            raise NotFound(f"no {noun} {label} {value!r}", hint=f"`banger {noun} list` shows them")
        assert isinstance(row, sqlite3.Row)
        return row

    def _artifact_rows(self, table: str) -> list[sqlite3.Row]:
        with self._db.reading() as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY name").fetchall()  # noqa: S608

    def _update_artifact(
        self, table: str, noun: str, row_id: str, changes: dict[str, Any], allowed: type
    ) -> None:
        unknown = set(changes) - set(allowed.__annotations__)
        if unknown:
            raise TypeError(f"cannot change {sorted(unknown)} on {_a(noun)}")
        if "meta" in changes:
            changes["meta"] = dump_json(changes["meta"])
        with self._db.transaction() as conn:
            try:
                found = update_row(conn, table, row_id, changes)
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc,
                    {
                        f"{table}.name": Conflict(
                            f"{_a(noun)} named {changes.get('name')!r} already exists"
                        )
                    },
                ) from exc
        if not found:
            raise NotFound(f"no {noun} with id {row_id!r}")

    def _delete_artifact(self, table: str, noun: str, row_id: str) -> None:
        """Delete an image or kernel that no VM uses (VM rows RESTRICT the delete)."""
        column = f"{noun}_id"
        with self._db.transaction() as conn:
            users = [
                row[0]
                for row in conn.execute(
                    f"SELECT name FROM vms WHERE {column} = ? ORDER BY name",  # noqa: S608
                    (row_id,),
                )
            ]
            if users:
                raise Conflict(
                    f"{noun} {row_id!r} is used by VMs: {', '.join(users)}",
                    hint="delete those VMs first",
                )
            # Snapshot rows RESTRICT the delete too (schema v5): their disks need it.
            snapshots = [
                row[0]
                for row in conn.execute(
                    f"SELECT name FROM snapshots WHERE {column} = ? ORDER BY name",  # noqa: S608
                    (row_id,),
                )
            ]
            if snapshots:
                raise Conflict(
                    f"{noun} {row_id!r} is used by snapshots: {', '.join(snapshots)}",
                    hint="remove them first: banger vm snapshot-rm NAME",
                )
            cursor = conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))  # noqa: S608
            if cursor.rowcount == 0:
                raise NotFound(f"no {noun} with id {row_id!r}")
