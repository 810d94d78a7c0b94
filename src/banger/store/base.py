"""What every repository mixin shares: the database, ids, JSON, error mapping."""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from banger.errors import BangerError, Conflict, InvalidArgument
from banger.store.db import Database


def new_id() -> str:
    """A short random hex id (12 characters)."""
    return secrets.token_hex(6)


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def load_json(text: str) -> Any:
    return json.loads(text)


def integrity_error(exc: sqlite3.IntegrityError, mapping: dict[str, BangerError]) -> BangerError:
    """Turn a constraint failure into the matching user-facing error.

    ``mapping`` keys are fragments of SQLite's message, e.g. ``"vms.name"`` for
    ``UNIQUE constraint failed: vms.name``.
    """
    text = str(exc)
    for fragment, error in mapping.items():
        if fragment in text:
            return error
    if "CHECK constraint" in text or "NOT NULL constraint" in text:
        return InvalidArgument(f"invalid value for the store: {text}")
    return Conflict(f"the store refused the change: {text}")


class Repo:
    """Base of the repository mixins that make up :class:`banger.store.Store`."""

    _db: Database
