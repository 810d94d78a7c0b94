"""Versioned schema migrations; ``PRAGMA user_version`` is the schema version.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with
the ``user_version`` bump, so a failing migration leaves the previous schema
and version intact (SQLite DDL is transactional). Statements are executed one
by one: ``executescript`` would COMMIT first and break that guarantee.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from banger.store import schema
from banger.store.errors import StoreError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str = ""
    #: Data migrations that SQL alone cannot express run after ``sql``.
    apply: Callable[[sqlite3.Connection], None] | None = None


def _widen_check(conn: sqlite3.Connection, table: str, old: str, new: str) -> None:
    """Rewrite one CHECK list of ``table`` in place: ``old`` (found exactly once) → ``new``.

    SQLite cannot alter a CHECK, and rebuilding a table would cascade-delete its
    children (``foreign_keys`` cannot be turned off inside the migration's
    transaction). Widening a CHECK changes nothing on disk, so this uses
    SQLite's documented procedure for removing constraints ("Making Other Kinds
    Of Table Schema Changes", lang_altertable.html §7): rewrite the table's
    definition in ``sqlite_schema`` and bump ``schema_version``, in the same
    transaction as the version bump. An unexpected definition is refused.
    """
    (create,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if create.count(old) != 1:
        raise ValueError(f"{table}.state CHECK is not the one this migration expects")
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (create.replace(old, new), table),
        )
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")
    problems = [tuple(row) for row in conn.execute("PRAGMA quick_check")]
    if problems != [("ok",)]:
        raise ValueError(f"integrity check after widening {table}.state: {problems}")


def _allow_paused_state(conn: sqlite3.Connection) -> None:
    """v3: add ``'paused'`` to the ``vms.state`` CHECK (``banger vm pause``)."""
    _widen_check(conn, "vms", "'deleting')", "'deleting', 'paused')")


def _allow_lost_sessions(conn: sqlite3.Connection) -> None:
    """v4: add ``'lost'`` to the ``sessions.state`` CHECK (the session's VM stopped under it).

    Until v4 a lost session was stored as ``'failed'`` with no exit status, and
    nothing else wrote ``'failed'``: those rows are lost sessions and say so now.
    """
    _widen_check(conn, "sessions", "'exited', 'failed')", "'exited', 'failed', 'lost')")
    conn.execute("UPDATE sessions SET state = 'lost' WHERE state = 'failed'")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", schema.V1),
    Migration(2, "vm labels, operations index", schema.V2),
    Migration(3, "vm state 'paused'", apply=_allow_paused_state),
    Migration(4, "session state 'lost'", apply=_allow_lost_sessions),
    Migration(5, "vm snapshots", schema.V5),
    Migration(6, "pools of ready guests", schema.V6),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def split_statements(script: str) -> list[str]:
    """Split an SQL script on statement boundaries (``;`` inside literals is kept)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _strip_comments(pending).strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""
    if _strip_comments(pending).strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending[:60]!r}")
    return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to the newest version; returns the version reached."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration versions must be 1..N in order; found {migration.version}")
    latest = latest_version(migrations)
    current = schema_version(conn)
    if current > latest:
        raise StoreError(
            f"the database schema is version {current}, newer than this banger "
            f"understands ({latest})",
            hint="upgrade banger; older versions cannot read a newer store",
        )
    for migration in migrations[current:]:
        _apply(conn, migration)
    return schema_version(conn)


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        # Another process may have migrated while we waited for the write lock.
        if schema_version(conn) >= migration.version:
            conn.execute("COMMIT")
            return
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        if migration.apply is not None:
            migration.apply(conn)
        problems = conn.execute("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise sqlite3.IntegrityError(f"{len(problems)} rows violate foreign keys")
        conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        conn.execute("COMMIT")
    except (sqlite3.Error, ValueError) as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(
            f"migrating the database to schema version {migration.version} "
            f"({migration.description}) failed: {exc}",
            hint=f"the database is unchanged at version {schema_version(conn)}; report this bug",
        ) from exc
