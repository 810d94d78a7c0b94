"""Store errors: what went wrong with the database, in one line plus a hint."""

from __future__ import annotations

from banger.errors import BangerError, Conflict


class StoreError(BangerError):
    """The database could not be opened, migrated or written."""

    http_status = 500
    exit_code = 8


class DatabaseFull(StoreError):
    """SQLite could not write: the filesystem under the database is full (SQLITE_FULL)."""

    http_status = 507


class SubnetFull(Conflict):
    """Every address in the VM subnet is leased or reserved."""
