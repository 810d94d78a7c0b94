"""Sessions: named long-running commands in a VM (tmux windows in the guest)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from banger.errors import Conflict, NotFound
from banger.store.base import Repo, dump_json, integrity_error, load_json, new_id
from banger.store.db import from_iso, maybe_iso, to_iso
from banger.store.records import SessionRecord, SessionState


def session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        vm_id=row["vm_id"],
        name=row["name"],
        command=tuple(load_json(row["command"])),
        state=SessionState(row["state"]),
        exit_status=row["exit_status"],
        started_at=from_iso(row["started_at"]),
        ended_at=maybe_iso(row["ended_at"]),
    )


class SessionRepo(Repo):
    def create_session(
        self,
        vm_id: str,
        name: str,
        command: Sequence[str],
        state: SessionState = SessionState.STARTING,
    ) -> SessionRecord:
        session_id = new_id()
        with self._db.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO sessions (id, vm_id, name, command, state, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        vm_id,
                        name,
                        dump_json(list(command)),
                        state.value,
                        self._db.now(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise integrity_error(
                    exc,
                    {
                        "sessions.vm_id, sessions.name": Conflict(
                            f"the VM already has a session named {name!r}",
                            hint="pick another name or attach to the existing session",
                        ),
                        "FOREIGN KEY": NotFound(f"no VM with id {vm_id!r}"),
                    },
                ) from exc
            return self._session_row(conn, "id = ?", (session_id,))

    def get_session(self, session_id: str) -> SessionRecord:
        with self._db.reading() as conn:
            return self._session_row(conn, "id = ?", (session_id,))

    def get_session_by_name(self, vm_id: str, name: str) -> SessionRecord:
        with self._db.reading() as conn:
            return self._session_row(conn, "vm_id = ? AND name = ?", (vm_id, name))

    def list_sessions(self, vm_id: str | None = None) -> list[SessionRecord]:
        with self._db.reading() as conn:
            if vm_id is None:
                rows = conn.execute("SELECT * FROM sessions ORDER BY started_at, rowid").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM sessions WHERE vm_id = ? ORDER BY started_at, rowid", (vm_id,)
                ).fetchall()
        return [session_from_row(row) for row in rows]

    def update_session(
        self,
        session_id: str,
        *,
        state: SessionState | None = None,
        exit_status: int | None = None,
        ended_at: datetime | None = None,
    ) -> SessionRecord:
        """Record progress; a finished state stamps ``ended_at`` (now, unless given).

        ``ended_at`` is the moment it really ended when that is known (the
        guest records it), which may be long before the daemon noticed.
        """
        with self._db.transaction() as conn:
            values: dict[str, Any] = {}
            if state is not None:
                values["state"] = state.value
                values["ended_at"] = self._db.now() if state.finished else None
            if ended_at is not None:
                values["ended_at"] = to_iso(ended_at)
            if exit_status is not None:
                values["exit_status"] = exit_status
            if values:
                assignments = ", ".join(f"{column} = ?" for column in values)
                conn.execute(
                    f"UPDATE sessions SET {assignments} WHERE id = ?",  # noqa: S608
                    (*values.values(), session_id),
                )
            return self._session_row(conn, "id = ?", (session_id,))

    def delete_session(self, session_id: str) -> None:
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 0:
                raise NotFound(f"no session with id {session_id!r}")

    @staticmethod
    def _session_row(
        conn: sqlite3.Connection, where: str, params: tuple[str, ...]
    ) -> SessionRecord:
        row = conn.execute(f"SELECT * FROM sessions WHERE {where}", params).fetchone()  # noqa: S608
        if row is None:
            raise NotFound("no such session", hint="`banger session list` shows them")
        return session_from_row(row)
