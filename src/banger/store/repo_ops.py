"""Operations (long-running requests such as "vm.start") and their event logs.

Events are numbered per operation from 1 with no gaps: the next ``seq`` is
computed inside the ``BEGIN IMMEDIATE`` transaction that inserts it, and
``PRIMARY KEY (op_id, seq)`` backs that up. Clients follow an operation with
``events_since(op_id, last_seq_seen)``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, dump_json, load_json, new_id
from banger.store.db import from_iso, maybe_iso, to_iso
from banger.store.records import OperationRecord, OpEvent, OpState


def operation_from_row(row: sqlite3.Row) -> OperationRecord:
    return OperationRecord(
        id=row["id"],
        kind=row["kind"],
        target=row["target"],
        stage=row["stage"],
        state=OpState(row["state"]),
        error=row["error"],
        hint=row["hint"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        finished_at=maybe_iso(row["finished_at"]),
    )


def event_from_row(row: sqlite3.Row) -> OpEvent:
    return OpEvent(
        op_id=row["op_id"],
        seq=row["seq"],
        at=from_iso(row["at"]),
        kind=row["kind"],
        stage=row["stage"],
        message=row["message"],
        data=load_json(row["data"]),
    )


class OperationRepo(Repo):
    def create_operation(self, kind: str, target: str | None = None) -> OperationRecord:
        op_id = new_id()
        with self._db.transaction() as conn:
            now = self._db.now()
            conn.execute(
                "INSERT INTO operations (id, kind, target, state, created_at, updated_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                (op_id, kind, target, now, now),
            )
            return self._op_row(conn, op_id)

    def get_operation(self, op_id: str) -> OperationRecord:
        with self._db.reading() as conn:
            return self._op_row(conn, op_id)

    def update_operation(
        self,
        op_id: str,
        *,
        stage: str | None = None,
        state: OpState | None = None,
        error: str | None = None,
        hint: str | None = None,
    ) -> OperationRecord:
        """Change the given fields (None leaves a field as it is).

        Moving to succeeded/failed stamps ``finished_at``; a finished operation
        cannot change state again.
        """
        with self._db.transaction() as conn:
            current = self._op_row(conn, op_id)
            values: dict[str, Any] = {"updated_at": self._db.now()}
            if stage is not None:
                values["stage"] = stage
            if error is not None:
                values["error"] = error
            if hint is not None:
                values["hint"] = hint
            if state is not None and state != current.state:
                if current.state.finished:
                    raise Conflict(
                        f"operation {op_id} already {current.state.value}; "
                        f"it cannot become {state.value}"
                    )
                values["state"] = state.value
                if state.finished:
                    values["finished_at"] = values["updated_at"]
            assignments = ", ".join(f"{column} = ?" for column in values)
            conn.execute(
                f"UPDATE operations SET {assignments} WHERE id = ?",  # noqa: S608
                (*values.values(), op_id),
            )
            return self._op_row(conn, op_id)

    def list_operations(
        self, include_finished: bool = False, limit: int = 100
    ) -> list[OperationRecord]:
        """Newest first."""
        where = "" if include_finished else "WHERE finished_at IS NULL"
        with self._db.reading() as conn:
            rows = conn.execute(
                f"SELECT * FROM operations {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        return [operation_from_row(row) for row in rows]

    def prune_operations(self, older_than: datetime) -> int:
        """Delete operations that finished before ``older_than`` (events go with them)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM operations WHERE finished_at IS NOT NULL AND finished_at < ?",
                (to_iso(older_than),),
            )
            return cursor.rowcount

    def append_event(
        self,
        op_id: str,
        kind: str,
        stage: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> OpEvent:
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM operations WHERE id = ?", (op_id,)).fetchone() is None:
                raise NotFound(f"no operation with id {op_id!r}")
            conn.execute(
                "INSERT INTO op_events (op_id, seq, at, kind, stage, message, data)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM op_events WHERE op_id = ?),"
                " ?, ?, ?, ?, ?)",
                (op_id, op_id, self._db.now(), kind, stage, message, dump_json(data or {})),
            )
            row = conn.execute(
                "SELECT * FROM op_events WHERE op_id = ? ORDER BY seq DESC LIMIT 1", (op_id,)
            ).fetchone()
            return event_from_row(row)

    def events_since(
        self, op_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[OpEvent]:
        """Events with ``seq > after_seq``, in order."""
        with self._db.reading() as conn:
            self._op_row(conn, op_id)
            rows = conn.execute(
                "SELECT * FROM op_events WHERE op_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (op_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        return [event_from_row(row) for row in rows]

    @staticmethod
    def _op_row(conn: sqlite3.Connection, op_id: str) -> OperationRecord:
        row = conn.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise NotFound(f"no operation with id {op_id!r}", hint="it may have been pruned")
        return operation_from_row(row)
