"""The SQLite connection: pragmas, explicit transactions, timestamps, row helpers.

The connection runs with ``isolation_level=None`` so the sqlite3 module never
opens or commits transactions behind our back: every write happens inside
:meth:`Database.transaction` (``BEGIN IMMEDIATE``, so the write lock is taken up
front and two writers never deadlock upgrading a read lock), and DDL in
migrations is transactional too. Nested ``transaction()`` blocks become
savepoints. One connection may be shared by several threads (the daemon calls
the store through ``asyncio.to_thread``); an ``RLock`` serialises them and is
held for the whole of a transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.store.errors import DatabaseFull, StoreError

Clock = Callable[[], datetime]

#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 5000


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """UTC ISO-8601 with fixed-width microseconds, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the store records UTC timestamps only")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def maybe_iso(text: str | None) -> datetime | None:
    return None if text is None else from_iso(text)


class Database:
    """One SQLite connection plus the lock and clock its users share."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock) -> None:
        self.conn = conn
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def connect(
        cls, path: Path, *, clock: Clock = utcnow, busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ) -> Database:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create the file owner-only before SQLite does (its -wal/-shm files
            # copy the database file's permissions).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(
                f"cannot create the database {path}: {exc.strerror or exc}",
                hint="check the permissions of the state directory",
            ) from exc
        try:
            conn = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"cannot switch {path} to WAL mode (journal_mode is {mode})")
            conn.execute("PRAGMA foreign_keys = ON")
            # WAL + NORMAL is durable across application crashes; only an OS crash
            # can lose the last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{path} is not a usable banger database: {exc}",
                hint="move the file away to start with an empty store",
            ) from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    def now(self) -> str:
        return to_iso(self.clock())

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; a nested block is a savepoint."""
        with self._lock:
            depth = self._depth
            if depth == 0:
                self._begin()
            else:
                self.conn.execute(f"SAVEPOINT sp{depth}")
            self._depth += 1
            try:
                yield self.conn
            except BaseException as exc:
                self._depth -= 1
                if not self.conn.in_transaction:
                    pass  # SQLite already rolled back (e.g. disk full)
                elif depth == 0:
                    self.conn.execute("ROLLBACK")
                else:
                    self.conn.execute(f"ROLLBACK TO sp{depth}")
                    self.conn.execute(f"RELEASE sp{depth}")
                self._raise_if_full(exc)
                raise
            self._depth -= 1
            try:
                if depth == 0:
                    self.conn.execute("COMMIT")
                else:
                    self.conn.execute(f"RELEASE sp{depth}")
            except sqlite3.OperationalError as exc:
                if self.conn.in_transaction and depth == 0:
                    self.conn.execute("ROLLBACK")
                self._raise_if_full(exc)
                raise

    def _raise_if_full(self, exc: BaseException) -> None:
        """A full filesystem is the user's to fix: say so, instead of an internal error."""
        if isinstance(exc, sqlite3.OperationalError) and (
            getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(exc)
        ):
            raise DatabaseFull(
                f"no space left on device for banger's database {self.path}",
                hint="free space on that filesystem, or point BANGER_HOME at a larger one",
            ) from exc

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (each statement sees a consistent snapshot)."""
        with self._lock:
            yield self.conn

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"the database {self.path} is busy: {exc}",
                hint="another banger process holds the write lock; retry in a moment",
            ) from exc

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def insert_row(conn: sqlite3.Connection, table: str, values: Mapping[str, Any]) -> None:
    """INSERT one row; ``table`` and the keys come from code, never from users."""
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))  # noqa: S608


def update_row(
    conn: sqlite3.Connection, table: str, row_id: str, values: Mapping[str, Any]
) -> bool:
    """UPDATE one row by id; False when there is no such row."""
    if not values:
        found = conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone()  # noqa: S608
        return found is not None
    assignments = ", ".join(f"{column} = ?" for column in values)
    cursor = conn.execute(
        f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608
        (*values.values(), row_id),
    )
    return cursor.rowcount > 0
